import { HttpClient, HttpClientRequest } from "@effect/platform"
import { describe, expect, it } from "@effect/vitest"
import { Effect, Layer, Schedule } from "effect"
import { makeOrderId } from "../../src/domain/Order"
import { EVENTS_EXCHANGE } from "../../src/contracts/NotificationEvents"
import { NotificationFailed, NotificationSender } from "../../src/notification/NotificationSender"
import { nextMessages, queueDepth, testBroker, uniqueQueueName } from "../support/broker"
import { eventsQueueOf, notificationConsumer, orderService } from "../support/services"

type Json = Record<string, any>

const post = (body: unknown, headers: Record<string, string> = {}) =>
  HttpClientRequest.post("/orders").pipe(
    HttpClientRequest.setHeaders(headers),
    HttpClientRequest.bodyUnsafeJson(body),
    HttpClient.execute,
    Effect.flatMap((response) => Effect.map(response.json, (json) => ({ response, body: json as Json })))
  )

const getOrder = (orderId: string) =>
  HttpClient.get(`/orders/${orderId}`).pipe(Effect.flatMap((response) => Effect.map(response.json, (json) => json as Json)))

/** Polls an order until `check` holds: the relay and the events move it on asynchronously. */
const orderUntil = (orderId: string, check: (order: Json) => boolean) =>
  getOrder(orderId).pipe(
    Effect.filterOrFail(check),
    Effect.retry(Schedule.spaced("25 millis").pipe(Schedule.upTo("20 seconds")))
  )

const alwaysFailing = Layer.succeed(
  NotificationSender,
  NotificationSender.make({ send: (command) => Effect.fail(new NotificationFailed({ orderId: command.orderId, reason: "SMTP said no" })) })
)

describe("an order's life, against the real broker", () => {
  it.scopedLive("POST → stored → queued → notified, visible in GET /orders/{id} and in the user's list", () =>
    Effect.gen(function*() {
      const queue = uniqueQueueName("flow")
      yield* testBroker(queue)
      yield* Effect.gen(function*() {
        const { body, response } = yield* post({ userId: 42 })
        expect(response.status).toBe(201)
        const orderId: string = body.order.orderId
        const notified = yield* orderUntil(orderId, (order) => order.status === "notified")
        expect(notified).toMatchObject({ orderId, userId: 42, status: "notified", notifications: 1 })
        for (const time of ["createdAt", "updatedAt", "queuedAt", "notifiedAt"]) {
          expect(notified[time]).toMatch(/^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$/)
        }
        expect(Date.parse(notified.notifiedAt)).toBeGreaterThanOrEqual(Date.parse(notified.createdAt))
        expect(notified.failure).toBeUndefined()
        const list = (yield* HttpClient.get("/orders?userId=42").pipe(Effect.flatMap((r) => r.json))) as Json
        expect(list.orders.map((order: Json) => order.orderId)).toEqual([orderId])
        expect(list.next).toBeNull()
      }).pipe(Effect.provide(Layer.merge(
        orderService({ COMMAND_QUEUE: queue }),
        notificationConsumer({ COMMAND_QUEUE: queue, NOTIFICATION_SEND_DELAY_MS: 0 })
      )))
    }), 30_000)

  it.scopedLive("an order whose notification fails every attempt ends failed, with the reason and the attempts", () =>
    Effect.gen(function*() {
      const queue = uniqueQueueName("flowfail")
      yield* testBroker(queue)
      yield* Effect.gen(function*() {
        const { body } = yield* post({ userId: 5 })
        const failed = yield* orderUntil(body.order.orderId, (order) => order.status === "failed")
        expect(failed.failure).toMatchObject({ attempts: 2 })
        expect(failed.failure.reason).toContain("SMTP said no")
        expect(failed.notifications).toBe(0)
        expect(yield* queueDepth(`${queue}.dlq`)).toBe(1)
      }).pipe(Effect.provide(Layer.merge(
        orderService({ COMMAND_QUEUE: queue }),
        notificationConsumer({ COMMAND_QUEUE: queue, NOTIFICATION_MAX_ATTEMPTS: 2 }, alwaysFailing)
      )))
    }), 30_000)

  it.scopedLive("Idempotency-Key: a repeat gets the first answer and makes no second order or command; another body gets 422", () =>
    Effect.gen(function*() {
      const queue = uniqueQueueName("idem")
      yield* testBroker(queue)
      yield* Effect.gen(function*() {
        const key = { "idempotency-key": "order-7f3a" }
        const first = yield* post({ userId: 9 }, key)
        const again = yield* post({ userId: 9 }, key)
        expect(first.response.status).toBe(201)
        expect(again.response.status).toBe(201)
        expect(again.response.headers["idempotent-replayed"]).toBe("true")
        expect(first.response.headers["idempotent-replayed"]).toBeUndefined()
        expect(again.body.order.orderId).toBe(first.body.order.orderId)
        expect(again.response.headers["location"]).toBe(`/orders/${first.body.order.orderId}`)

        const other = yield* post({ userId: 10 }, key)
        expect(other.response.status).toBe(422)
        expect(other.body._tag).toBe("IdempotencyKeyReused")

        yield* orderUntil(first.body.order.orderId, (order) => order.status === "queued")
        const list = (yield* HttpClient.get("/orders?userId=9").pipe(Effect.flatMap((r) => r.json))) as Json
        expect(list.orders).toHaveLength(1)
        expect(yield* queueDepth(queue)).toBe(1)
      }).pipe(Effect.provide(orderService({ COMMAND_QUEUE: queue })))
    }), 30_000)

  it.scopedLive("50 concurrent requests with one key create one order and one command", () =>
    Effect.gen(function*() {
      const queue = uniqueQueueName("idemrace")
      yield* testBroker(queue)
      yield* Effect.gen(function*() {
        const answers = yield* Effect.all(
          Array.from({ length: 50 }, () => post({ userId: 11 }, { "idempotency-key": "same-key" })),
          { concurrency: "unbounded" }
        )
        expect(answers.map(({ response }) => response.status)).toEqual(Array(50).fill(201))
        const ids = new Set(answers.map(({ body }) => body.order.orderId))
        expect(ids.size).toBe(1)
        expect(answers.filter(({ response }) => response.headers["idempotent-replayed"] === "true")).toHaveLength(49)
        yield* orderUntil([...ids][0]!, (order) => order.status === "queued")
        expect(yield* queueDepth(queue)).toBe(1)
      }).pipe(Effect.provide(orderService({ COMMAND_QUEUE: queue })))
    }), 30_000)

  it.scopedLive("dead-letters a malformed event at once and applies the next good one", () =>
    Effect.gen(function*() {
      const queue = uniqueQueueName("badevent")
      const { channel } = yield* testBroker(queue)
      const eventsQueue = eventsQueueOf(queue)
      yield* Effect.gen(function*() {
        const { body } = yield* post({ userId: 3 })
        const orderId: string = body.order.orderId
        yield* orderUntil(orderId, (order) => order.status === "queued")
        const properties = (type: string, messageId: string) =>
          ({ type, messageId, correlationId: orderId, contentType: "application/json", persistent: true })
        // Straight onto the order service's queue, as a misbehaving publisher would.
        channel.sendToQueue(eventsQueue, Buffer.from("{not json"), properties("NotificationSent", "bad-1"))
        channel.sendToQueue(eventsQueue, Buffer.from("{}"), properties("OrderShipped", "bad-2"))
        channel.sendToQueue(eventsQueue, Buffer.from(JSON.stringify({ orderId: makeOrderId(), userId: 3, sentAt: new Date().toISOString() })), properties("NotificationSent", "unknown-order"))
        const good = { orderId, userId: 3, sentAt: new Date().toISOString() }
        channel.publish(EVENTS_EXCHANGE, "notification.sent", Buffer.from(JSON.stringify(good)), properties("NotificationSent", "good-1"))
        // A duplicate of the good one changes nothing.
        channel.publish(EVENTS_EXCHANGE, "notification.sent", Buffer.from(JSON.stringify(good)), properties("NotificationSent", "good-1"))

        const deadLettered = yield* nextMessages(channel, `${eventsQueue}.dlq`, 2)
        expect(deadLettered.map((message) => message.properties.messageId).sort()).toEqual(["bad-1", "bad-2"])
        const notified = yield* orderUntil(orderId, (order) => order.status === "notified")
        expect(notified.notifications).toBe(1)
        // Every event was settled: nothing waits on the events queue, and only the two bad ones were dead-lettered.
        yield* Effect.retry(
          Effect.filterOrFail(queueDepth(eventsQueue), (depth) => depth === 0),
          Schedule.spaced("50 millis").pipe(Schedule.upTo("5 seconds"))
        )
        expect(yield* queueDepth(`${eventsQueue}.dlq`)).toBe(0)
      }).pipe(Effect.provide(orderService({ COMMAND_QUEUE: queue })))
    }), 30_000)
})
