import { describe, expect, it } from "@effect/vitest"
import type * as amqp from "amqplib"
import { Deferred, Effect, Exit, Fiber, Layer } from "effect"
import { NotificationFailedEvent, type NotificationEvent, NotificationSentEvent } from "../../src/contracts/NotificationEvents"
import { encodeCommand, SendNotificationCommand } from "../../src/contracts/SendNotificationCommand"
import { makeOrderId, UserId } from "../../src/domain/Order"
import { deliveryAttempt, Settlement } from "../../src/messaging/Settlement"
import { processDelivery } from "../../src/notification/CommandConsumer"
import { EventPublisher } from "../../src/notification/EventPublisher"
import { NotificationFailed, NotificationSender } from "../../src/notification/NotificationSender"

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

/** An event publisher double whose broker confirms every event at once; it records them. */
const recordingEvents = () => {
  const published: Array<NotificationEvent> = []
  const layer = Layer.succeed(
    EventPublisher,
    EventPublisher.of({ publish: (event) => Effect.sync(() => void published.push(event)), isReady: Effect.succeed(true) })
  )
  return { published, layer }
}

const nameOf = (event: NotificationEvent) => (event instanceof NotificationSentEvent ? "NotificationSent" : "NotificationFailed")

/**
 * An event publisher double whose broker holds each event's confirm until the test releases it;
 * `steps` records the publish, its confirm, and whatever the test adds.
 */
const heldEvents = Effect.gen(function*() {
  const steps: Array<string> = []
  const publishing = yield* Deferred.make<void>()
  const confirm = yield* Deferred.make<void>()
  const layer = Layer.succeed(
    EventPublisher,
    EventPublisher.of({
      publish: (event) =>
        Effect.sync(() => steps.push(`publishing ${nameOf(event)}`)).pipe(
          Effect.zipRight(Deferred.succeed(publishing, undefined)),
          Effect.zipRight(Deferred.await(confirm)),
          Effect.zipRight(Effect.sync(() => steps.push("confirmed")))
        ),
      isReady: Effect.succeed(true)
    })
  )
  return { steps, layer, publishing, confirm }
})

/** The consumer's decision for one delivery, with a sender and a recording event publisher. */
const decide = (delivery: amqp.Message, sender: Layer.Layer<NotificationSender>, maxAttempts = 5) => {
  const events = recordingEvents()
  return Effect.map(
    processDelivery(delivery, maxAttempts).pipe(Effect.provide(Layer.merge(sender, events.layer))),
    (settlement) => ({ settlement, published: events.published })
  )
}

describe("processDelivery", () => {
  it.effect("sends a valid command, publishes NotificationSent, and acks it", () => {
    const { layer, sent } = recordingSender("succeed")
    return Effect.gen(function*() {
      const before = Date.now()
      const { published, settlement } = yield* decide(message(encodeCommand(command)), layer)
      expect(settlement).toEqual(Settlement.Ack())
      expect(sent.map((c) => c.orderId)).toEqual([command.orderId])
      expect(published).toHaveLength(1)
      const event = published[0]!
      expect(event).toBeInstanceOf(NotificationSentEvent)
      expect(event).toMatchObject({ orderId: command.orderId, userId: 42 })
      const sentAt = (event as NotificationSentEvent).sentAt.getTime()
      expect(sentAt).toBeGreaterThanOrEqual(before)
      expect(sentAt).toBeLessThanOrEqual(Date.now())
    })
  })

  it.effect("settles a sent command only once its event is confirmed", () => {
    const { layer: sender } = recordingSender("succeed")
    return Effect.gen(function*() {
      const events = yield* heldEvents
      const processing = yield* processDelivery(message(encodeCommand(command)), 5).pipe(
        Effect.tap((settlement) => Effect.sync(() => events.steps.push(`settled ${settlement._tag}`))),
        Effect.provide(Layer.merge(sender, events.layer)),
        Effect.fork
      )
      yield* Deferred.await(events.publishing)
      expect(processing.unsafePoll()).toBeNull()
      expect(events.steps).toEqual(["publishing NotificationSent"])

      yield* Deferred.succeed(events.confirm, undefined)
      expect(yield* Fiber.join(processing)).toEqual(Settlement.Ack())
      expect(events.steps).toEqual(["publishing NotificationSent", "confirmed", "settled Ack"])
    })
  })

  it.effect("settles nothing while the event is unconfirmed: interrupted then (shutdown), the broker redelivers", () => {
    const { layer: sender } = recordingSender("succeed")
    return Effect.gen(function*() {
      const publishing = yield* Deferred.make<void>()
      const events = Layer.succeed(
        EventPublisher,
        EventPublisher.of({ publish: () => Effect.zipRight(Deferred.succeed(publishing, undefined), Effect.never), isReady: Effect.succeed(true) })
      )
      const processing = yield* processDelivery(message(encodeCommand(command)), 5).pipe(
        Effect.provide(Layer.merge(sender, events)),
        Effect.fork
      )
      yield* Deferred.await(publishing)
      expect(Exit.isInterrupted(yield* Fiber.interrupt(processing))).toBe(true)
    })
  })

  const poison: ReadonlyArray<[string, string]> = [
    ["not JSON", "{\"orderId\":"],
    ["the original demo's numeric id", JSON.stringify({ orderId: 1707557234567, userId: 42 })],
    ["a missing userId", JSON.stringify({ orderId: command.orderId })],
    ["an array", "[]"]
  ]
  for (const [what, body] of poison) {
    it.effect(`dead-letters ${what} at once, without sending or publishing`, () => {
      const { layer, sent } = recordingSender("succeed")
      return Effect.gen(function*() {
        const { published, settlement } = yield* decide(message(Buffer.from(body)), layer)
        expect(settlement._tag).toBe("DeadLetter")
        expect((settlement as { reason: string }).reason).toMatch(/^not a valid SendNotificationCommand \(.+\)$/)
        expect((settlement as { poison: boolean }).poison).toBe(true)
        expect(sent).toEqual([])
        expect(published).toEqual([])
      })
    })
  }

  it.effect("retries a failed send while attempts remain, publishing nothing", () => {
    const { layer, sent } = recordingSender("fail")
    return Effect.gen(function*() {
      const { published, settlement } = yield* decide(message(encodeCommand(command), { "x-delivery-count": 3 }), layer)
      expect(settlement).toEqual(Settlement.Retry({ reason: `Notification for order ${command.orderId} failed: SMTP said no (attempt 4 of 5)` }))
      expect(sent).toHaveLength(1)
      expect(published).toEqual([])
    })
  })

  it.effect("dead-letters a failed send on the last attempt, after publishing NotificationFailed", () => {
    const { layer } = recordingSender("fail")
    return Effect.gen(function*() {
      const before = Date.now()
      const { published, settlement } = yield* decide(message(encodeCommand(command), { "x-delivery-count": 4 }), layer)
      expect(settlement).toEqual(Settlement.DeadLetter({
        reason: `Notification for order ${command.orderId} failed: SMTP said no; gave up after 5 attempts`,
        poison: false
      }))
      expect(published).toHaveLength(1)
      const event = published[0]!
      expect(event).toBeInstanceOf(NotificationFailedEvent)
      expect(event).toMatchObject({
        orderId: command.orderId,
        userId: 42,
        reason: `Notification for order ${command.orderId} failed: SMTP said no`,
        attempts: 5
      })
      expect((event as NotificationFailedEvent).failedAt.getTime()).toBeGreaterThanOrEqual(before)
    })
  })

  it.effect("counts the attempts the broker counted, in the dead letter's event, when they went past the maximum", () => {
    const { layer } = recordingSender("fail")
    return Effect.gen(function*() {
      const { published, settlement } = yield* decide(message(encodeCommand(command), { "x-delivery-count": 6 }), layer)
      expect(settlement._tag).toBe("DeadLetter")
      expect((settlement as { reason: string }).reason).toContain("gave up after 7 attempts")
      expect(published).toMatchObject([{ attempts: 7 }])
    })
  })

  it.effect("dead-letters a failed send on the last attempt only once its NotificationFailed is confirmed", () => {
    const { layer: sender } = recordingSender("fail")
    return Effect.gen(function*() {
      const events = yield* heldEvents
      const processing = yield* processDelivery(message(encodeCommand(command), { "x-delivery-count": 4 }), 5).pipe(
        Effect.tap((settlement) => Effect.sync(() => events.steps.push(`settled ${settlement._tag}`))),
        Effect.provide(Layer.merge(sender, events.layer)),
        Effect.fork
      )
      yield* Deferred.await(events.publishing)
      expect(processing.unsafePoll()).toBeNull()
      expect(events.steps).toEqual(["publishing NotificationFailed"])

      yield* Deferred.succeed(events.confirm, undefined)
      expect((yield* Fiber.join(processing))._tag).toBe("DeadLetter")
      expect(events.steps).toEqual(["publishing NotificationFailed", "confirmed", "settled DeadLetter"])
    })
  })

  it.effect("treats a defect in the sender as a failed attempt, not a crash", () => {
    const layer = Layer.succeed(NotificationSender, NotificationSender.make({ send: () => Effect.die(new Error("bug")) }))
    return Effect.gen(function*() {
      const first = yield* decide(message(encodeCommand(command)), layer)
      expect(first.settlement).toEqual(Settlement.Retry({ reason: "bug (attempt 1 of 5)" }))
      expect(first.published).toEqual([])
      const last = yield* decide(message(encodeCommand(command), { "x-delivery-count": 4 }), layer)
      expect(last.settlement).toEqual(Settlement.DeadLetter({ reason: "bug; gave up after 5 attempts", poison: false }))
      expect(last.published).toMatchObject([{ orderId: command.orderId, reason: "bug", attempts: 5 }])
    })
  })

  it.effect("settles nothing and publishes nothing when the send is interrupted (shutdown): the broker redelivers", () => {
    const layer = Layer.succeed(NotificationSender, NotificationSender.make({ send: () => Effect.interrupt }))
    return Effect.gen(function*() {
      const events = recordingEvents()
      const exit = yield* processDelivery(message(encodeCommand(command), { "x-delivery-count": 4 }), 5).pipe(
        Effect.provide(Layer.merge(layer, events.layer)),
        Effect.exit
      )
      expect(Exit.isInterrupted(exit)).toBe(true)
      expect(events.published).toEqual([])
    })
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
