import { describe, expect, it } from "@effect/vitest"
import type * as amqp from "amqplib"
import { Deferred, Effect, Exit, Fiber, Layer, TestClock } from "effect"
import { NotificationFailedEvent, type NotificationEvent, NotificationSentEvent } from "../../src/contracts/NotificationEvents"
import { encodeCommand, SendNotificationCommand } from "../../src/contracts/SendNotificationCommand"
import { makeOrderId, UserId } from "../../src/domain/Order"
import { decideRetry, delaysOf, RetryDecision, type RetryPolicy } from "../../src/messaging/DelayedRetry"
import { deliveryAttempt, Settlement } from "../../src/messaging/Settlement"
import { processDelivery } from "../../src/notification/CommandConsumer"
import { EventPublisher } from "../../src/notification/EventPublisher"
import { NotificationFailed, NotificationSender } from "../../src/notification/NotificationSender"

/** Every retry an immediate requeue, as in the released design (`NOTIFICATION_RETRY_DELAY_MS=0`). */
const IMMEDIATE_RETRIES: RetryPolicy = { maxAttempts: 5, firstDelayMillis: 0, maxDelayMillis: 60_000 }
/** The defaults: the first retry immediate, then 1 s doubling, capped at 60 s. */
const DELAYED_RETRIES: RetryPolicy = { maxAttempts: 5, firstDelayMillis: 1000, maxDelayMillis: 60_000 }

/** A moment for the TestClock to stand at, so that event and failure times can be compared exactly. */
const NOW = new Date("2026-12-02T10:00:00.000Z")

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
const decide = (delivery: amqp.Message, sender: Layer.Layer<NotificationSender>, policy = IMMEDIATE_RETRIES) => {
  const events = recordingEvents()
  return Effect.map(
    TestClock.setTime(NOW.getTime()).pipe(
      Effect.zipRight(processDelivery(delivery, policy)),
      Effect.provide(Layer.merge(sender, events.layer))
    ),
    (settlement) => ({ settlement, published: events.published })
  )
}

describe("processDelivery", () => {
  it.effect("sends a valid command, publishes NotificationSent, and acks it", () => {
    const { layer, sent } = recordingSender("succeed")
    return Effect.gen(function*() {
      const { published, settlement } = yield* decide(message(encodeCommand(command)), layer)
      expect(settlement).toEqual(Settlement.Ack())
      expect(sent.map((c) => c.orderId)).toEqual([command.orderId])
      expect(published).toHaveLength(1)
      const event = published[0]!
      expect(event).toBeInstanceOf(NotificationSentEvent)
      expect(event).toMatchObject({ orderId: command.orderId, userId: 42, sentAt: NOW })
    })
  })

  it.effect("settles a sent command only once its event is confirmed", () => {
    const { layer: sender } = recordingSender("succeed")
    return Effect.gen(function*() {
      const events = yield* heldEvents
      const processing = yield* processDelivery(message(encodeCommand(command)), IMMEDIATE_RETRIES).pipe(
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
      const processing = yield* processDelivery(message(encodeCommand(command)), IMMEDIATE_RETRIES).pipe(
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
      const { published, settlement } = yield* decide(message(encodeCommand(command), { "x-delivery-count": 4 }), layer)
      expect(settlement).toEqual(Settlement.DeadLetter({
        reason: `Notification for order ${command.orderId} failed: SMTP said no`,
        poison: false,
        attempts: 5
      }))
      expect(published).toHaveLength(1)
      const event = published[0]!
      expect(event).toBeInstanceOf(NotificationFailedEvent)
      expect(event).toMatchObject({
        orderId: command.orderId,
        userId: 42,
        reason: `Notification for order ${command.orderId} failed: SMTP said no`,
        attempts: 5,
        failedAt: NOW
      })
    })
  })

  it.effect("counts the attempts the broker counted, in the dead letter's event, when they went past the maximum", () => {
    const { layer } = recordingSender("fail")
    return Effect.gen(function*() {
      const { published, settlement } = yield* decide(message(encodeCommand(command), { "x-delivery-count": 6 }), layer)
      expect(settlement).toMatchObject({ _tag: "DeadLetter", attempts: 7 })
      expect(published).toMatchObject([{ attempts: 7 }])
    })
  })

  it.effect("dead-letters a failed send on the last attempt only once its NotificationFailed is confirmed", () => {
    const { layer: sender } = recordingSender("fail")
    return Effect.gen(function*() {
      const events = yield* heldEvents
      const processing = yield* processDelivery(message(encodeCommand(command), { "x-delivery-count": 4 }), IMMEDIATE_RETRIES).pipe(
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
      expect(last.settlement).toEqual(Settlement.DeadLetter({ reason: "bug", poison: false, attempts: 5 }))
      expect(last.published).toMatchObject([{ orderId: command.orderId, reason: "bug", attempts: 5 }])
    })
  })

  it.effect("settles nothing and publishes nothing when the send is interrupted (shutdown): the broker redelivers", () => {
    const layer = Layer.succeed(NotificationSender, NotificationSender.make({ send: () => Effect.interrupt }))
    return Effect.gen(function*() {
      const events = recordingEvents()
      const exit = yield* processDelivery(message(encodeCommand(command), { "x-delivery-count": 4 }), IMMEDIATE_RETRIES).pipe(
        Effect.provide(Layer.merge(layer, events.layer)),
        Effect.exit
      )
      expect(Exit.isInterrupted(exit)).toBe(true)
      expect(events.published).toEqual([])
    })
  })
})

describe("processDelivery with delayed retries", () => {
  const failing = recordingSender("fail").layer
  const reason = `Notification for order ${command.orderId} failed: SMTP said no`

  it.effect("requeues the first failed attempt at once", () =>
    Effect.gen(function*() {
      const { settlement } = yield* decide(message(encodeCommand(command)), failing, DELAYED_RETRIES)
      expect(settlement).toEqual(Settlement.Retry({ reason: `${reason} (attempt 1 of 5)` }))
    }))

  it.effect("sends the second failed attempt to wait the first delay, jittered upwards by at most a quarter", () =>
    Effect.gen(function*() {
      const { settlement } = yield* decide(message(encodeCommand(command), { "x-delivery-count": 1 }), failing, DELAYED_RETRIES)
      expect(settlement).toMatchObject({ _tag: "RetryLater", reason, attempts: 2, delayMillis: 1000 })
      const { waitMillis } = settlement as Extract<Settlement, { _tag: "RetryLater" }>
      expect(waitMillis).toBeGreaterThanOrEqual(1000)
      expect(waitMillis).toBeLessThanOrEqual(1250)
    }))

  it.effect("counts the attempts its story carries back from the delay queue, and doubles the delay", () =>
    Effect.gen(function*() {
      const { settlement } = yield* decide(message(encodeCommand(command), { "x-attempts": 3 }), failing, DELAYED_RETRIES)
      expect(settlement).toMatchObject({ _tag: "RetryLater", attempts: 4, delayMillis: 4000 })
    }))

  it.effect("counts a redelivery after a crash on top of the story's attempts, and gives up on the last", () =>
    Effect.gen(function*() {
      const { published, settlement } = yield* decide(
        message(encodeCommand(command), { "x-attempts": 3, "x-delivery-count": 1 }),
        failing,
        DELAYED_RETRIES
      )
      expect(settlement).toEqual(Settlement.DeadLetter({ reason, poison: false, attempts: 5 }))
      expect(published).toMatchObject([{ orderId: command.orderId, reason, attempts: 5, failedAt: NOW }])
    }))
})

describe("decideRetry", () => {
  const decisions = (policy: RetryPolicy) =>
    Effect.forEach(Array.from({ length: policy.maxAttempts }, (_, index) => index + 1), (attempt) => decideRetry(policy, attempt))

  it.effect("attempt 1: at once; later: the delay doubling; the last: give up", () =>
    Effect.gen(function*() {
      const made = yield* decisions({ maxAttempts: 6, firstDelayMillis: 200, maxDelayMillis: 60_000 })
      expect(made.map((decision) => decision._tag)).toEqual(["RetryNow", "RetryLater", "RetryLater", "RetryLater", "RetryLater", "GiveUp"])
      expect(made.slice(1, 5).map((decision) => (decision as { delayMillis: number }).delayMillis)).toEqual([200, 400, 800, 1600])
    }))

  it.effect("never waits longer than the cap, whose delay queue every later retry shares", () =>
    Effect.gen(function*() {
      const policy = { maxAttempts: 8, firstDelayMillis: 1000, maxDelayMillis: 5000 }
      const made = yield* decisions(policy)
      const waits = made.filter(RetryDecision.$is("RetryLater"))
      expect(waits.map((decision) => decision.delayMillis)).toEqual([1000, 2000, 4000, 5000, 5000, 5000])
      for (const decision of waits) expect(decision.waitMillis).toBeLessThanOrEqual(5000)
      expect(delaysOf(policy)).toEqual([1000, 2000, 4000, 5000])
    }))

  it.effect("with a first delay of 0 every retry is immediate, and there is no delay queue", () =>
    Effect.gen(function*() {
      const made = yield* decisions(IMMEDIATE_RETRIES)
      expect(made.map((decision) => decision._tag)).toEqual(["RetryNow", "RetryNow", "RetryNow", "RetryNow", "GiveUp"])
      expect(delaysOf(IMMEDIATE_RETRIES)).toEqual([])
    }))

  it.effect("a single attempt gives up at once", () =>
    Effect.gen(function*() {
      expect(yield* decideRetry({ ...DELAYED_RETRIES, maxAttempts: 1 }, 1)).toEqual(RetryDecision.GiveUp())
    }))
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
  it("adds the attempts of the message's story (x-attempts, carried through a delay queue)", () => {
    expect(deliveryAttempt(withHeaders({ "x-attempts": 3 }))).toBe(4)
    expect(deliveryAttempt(withHeaders({ "x-attempts": 3, "x-delivery-count": 1 }))).toBe(5)
  })
  it("ignores a header that is not a count", () => {
    expect(deliveryAttempt(withHeaders({ "x-delivery-count": "lots" }))).toBe(1)
  })
})
