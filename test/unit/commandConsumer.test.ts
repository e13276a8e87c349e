import { describe, expect, it } from "@effect/vitest"
import type * as amqp from "amqplib"
import { Effect, Layer } from "effect"
import { makeOrderId, UserId } from "../../src/domain/Order"
import { encodeCommand, SendNotificationCommand } from "../../src/messaging/SendNotificationCommand"
import { processDelivery } from "../../src/notification/CommandConsumer"
import { NotificationFailed, NotificationSender } from "../../src/notification/NotificationSender"
import { deliveryAttempt, Settlement } from "../../src/notification/Settlement"

const command = new SendNotificationCommand({ orderId: makeOrderId(), userId: UserId.make(42) })

const message = (content: Buffer, headers: Record<string, unknown> = {}) =>
  ({ content, fields: {}, properties: { headers, messageId: command.orderId } }) as unknown as amqp.Message

/** A sender double that records what it was asked to send, and fails if told to. */
const recordingSender = (outcome: "succeed" | "fail") => {
  const sent: Array<SendNotificationCommand> = []
  const layer = Layer.succeed(
    NotificationSender,
    NotificationSender.make({
      send: (c) =>
        Effect.suspend(() => {
          sent.push(c)
          return outcome === "succeed" ? Effect.void : Effect.fail(new NotificationFailed({ orderId: c.orderId, reason: "SMTP said no" }))
        })
    })
  )
  return { sent, layer }
}

describe("processDelivery", () => {
  it.effect("sends a valid command and acks it", () => {
    const { layer, sent } = recordingSender("succeed")
    return Effect.gen(function*() {
      const settlement = yield* processDelivery(message(encodeCommand(command)), 5)
      expect(settlement).toEqual(Settlement.Ack())
      expect(sent.map((c) => c.orderId)).toEqual([command.orderId])
    }).pipe(Effect.provide(layer))
  })

  const poison: ReadonlyArray<[string, string]> = [
    ["not JSON", "{\"orderId\":"],
    ["the original demo's numeric id", JSON.stringify({ orderId: 1707557234567, userId: 42 })],
    ["a missing userId", JSON.stringify({ orderId: command.orderId })],
    ["an array", "[]"]
  ]
  for (const [what, body] of poison) {
    it.effect(`dead-letters ${what} at once, without sending`, () => {
      const { layer, sent } = recordingSender("succeed")
      return Effect.gen(function*() {
        const settlement = yield* processDelivery(message(Buffer.from(body)), 5)
        expect(settlement._tag).toBe("DeadLetter")
        expect((settlement as { reason: string }).reason).toMatch(/^not a valid SendNotificationCommand \(.+\)$/)
        expect((settlement as { poison: boolean }).poison).toBe(true)
        expect(sent).toEqual([])
      }).pipe(Effect.provide(layer))
    })
  }

  it.effect("retries a failed send while attempts remain", () => {
    const { layer, sent } = recordingSender("fail")
    return Effect.gen(function*() {
      const settlement = yield* processDelivery(message(encodeCommand(command), { "x-delivery-count": 3 }), 5)
      expect(settlement).toEqual(Settlement.Retry({ reason: `Notification for order ${command.orderId} failed: SMTP said no (attempt 4 of 5)` }))
      expect(sent).toHaveLength(1)
    }).pipe(Effect.provide(layer))
  })

  it.effect("dead-letters a failed send on the last attempt", () => {
    const { layer } = recordingSender("fail")
    return Effect.gen(function*() {
      const settlement = yield* processDelivery(message(encodeCommand(command), { "x-delivery-count": 4 }), 5)
      expect(settlement._tag).toBe("DeadLetter")
      expect((settlement as { reason: string }).reason).toContain("gave up after 5 attempts")
      expect((settlement as { poison: boolean }).poison).toBe(false)
    }).pipe(Effect.provide(layer))
  })

  it.effect("treats a defect in the sender as a failed attempt, not a crash", () => {
    const layer = Layer.succeed(NotificationSender, NotificationSender.make({ send: () => Effect.die(new Error("bug")) }))
    return Effect.gen(function*() {
      const settlement = yield* processDelivery(message(encodeCommand(command)), 5)
      expect(settlement).toEqual(Settlement.Retry({ reason: "bug (attempt 1 of 5)" }))
    }).pipe(Effect.provide(layer))
  })
})

describe("deliveryAttempt", () => {
  const withHeaders = (headers: Record<string, unknown> | undefined) =>
    ({ properties: { headers } }) as unknown as amqp.Message

  it("is 1 for a first delivery", () => {
    expect(deliveryAttempt(withHeaders(undefined))).toBe(1)
    expect(deliveryAttempt(withHeaders({}))).toBe(1)
  })
  it("counts x-delivery-count (RabbitMQ 3.10 to 4.2)", () => {
    expect(deliveryAttempt(withHeaders({ "x-delivery-count": 2 }))).toBe(3)
  })
  it("counts x-acquired-count (RabbitMQ 4.3+) when it is the larger", () => {
    expect(deliveryAttempt(withHeaders({ "x-delivery-count": 1, "x-acquired-count": 4 }))).toBe(5)
  })
  it("ignores a header that is not a count", () => {
    expect(deliveryAttempt(withHeaders({ "x-delivery-count": "lots" }))).toBe(1)
  })
})
