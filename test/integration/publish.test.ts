import { HttpClient, HttpClientRequest } from "@effect/platform"
import { describe, expect, it } from "@effect/vitest"
import { Effect, Schedule } from "effect"
import { declareWorkQueue } from "../../src/messaging/QueueTopology"
import { eventually, nextMessage, queueDeclaration, queueDepth, testBroker, uniqueQueueName } from "../support/broker"
import { orderService } from "../support/services"

const postOrder = (userId: number) =>
  HttpClientRequest.post("/orders").pipe(HttpClientRequest.bodyUnsafeJson({ userId }), HttpClient.execute)

const getJson = (path: string) =>
  HttpClient.get(path).pipe(Effect.flatMap((response) => Effect.map(response.json, (body) => ({ status: response.status, body: body as Record<string, any> }))))

/** Polls an order until `check` holds (the relay and the events move it on asynchronously). */
const orderUntil = (orderId: string, check: (order: Record<string, any>) => boolean) =>
  getJson(`/orders/${orderId}`).pipe(
    Effect.filterOrFail(({ body }) => check(body)),
    Effect.retry(Schedule.spaced("20 millis").pipe(Schedule.upTo("15 seconds"))),
    Effect.map(({ body }) => body)
  )

/** The broker side is up: the relay's confirm channel is open and the topology declared. */
const awaitBroker = getJson("/health/ready").pipe(
  Effect.filterOrFail(({ body, status }) => status === 200 && body.broker === "up"),
  Effect.retry(Schedule.spaced("20 millis").pipe(Schedule.upTo("15 seconds")))
)

describe("order service against the real broker", () => {
  it.scopedLive("stores the order, answers 201 with its Location, and relays the contract's message to a durable quorum queue", () =>
    Effect.gen(function*() {
      const queue = uniqueQueueName("publish")
      const { channel } = yield* testBroker(queue)
      yield* Effect.gen(function*() {
        yield* awaitBroker
        const response = yield* postOrder(42)
        expect(response.status).toBe(201)
        const { order } = (yield* response.json) as { order: { orderId: string; userId: number; status: string } }
        expect(response.headers["location"]).toBe(`/orders/${order.orderId}`)
        expect(order).toMatchObject({ userId: 42, status: "accepted" })

        const message = yield* nextMessage(channel, queue).pipe(Effect.timeout("10 seconds"))
        expect(JSON.parse(message.content.toString())).toEqual({ orderId: order.orderId, userId: 42 })
        expect(message.properties).toMatchObject({
          deliveryMode: 2,
          contentType: "application/json",
          messageId: order.orderId,
          type: "SendNotificationCommand",
          appId: "order-service"
        })
        expect(typeof message.properties.timestamp).toBe("number")
        const queued = yield* orderUntil(order.orderId, (o) => o.status === "queued")
        expect(typeof queued.queuedAt).toBe("string")

        const commandQueue = yield* queueDeclaration(queue)
        expect(commandQueue).toMatchObject({ type: "quorum", durable: true })
        for (const argument of ['"x-dead-letter-exchange",[]', `"x-dead-letter-routing-key","${queue}.dlq"`, '"x-dead-letter-strategy","at-least-once"', '"x-overflow","reject-publish"']) {
          expect(commandQueue?.arguments).toContain(argument)
        }
        expect(yield* queueDeclaration(`${queue}.dlq`)).toMatchObject({ type: "quorum", durable: true })
        expect(yield* queueDeclaration(`${queue}.events`)).toMatchObject({ type: "quorum", durable: true })
      }).pipe(Effect.provide(orderService({ COMMAND_QUEUE: queue })))
    }))

  it.scopedLive("keeps a command the broker returns (its queue deleted) in the outbox, and relays it once the queue is back", () =>
    Effect.gen(function*() {
      const queue = uniqueQueueName("unroutable")
      const { channel } = yield* testBroker(queue)
      yield* Effect.gen(function*() {
        yield* awaitBroker
        // Someone deletes the queue under the running service: there is nowhere to route to.
        yield* Effect.promise(() => channel.deleteQueue(queue))
        const response = yield* postOrder(7)
        expect(response.status).toBe(201)
        const { order } = (yield* response.json) as { order: { orderId: string } }
        yield* getJson("/health/ready").pipe(
          Effect.filterOrFail(({ body }) => body.outbox.pending === 1),
          Effect.retry(Schedule.spaced("50 millis").pipe(Schedule.upTo("5 seconds")))
        )
        expect((yield* getJson(`/orders/${order.orderId}`)).body.status).toBe("accepted")

        yield* declareWorkQueue(channel, queue)
        yield* orderUntil(order.orderId, (o) => o.status === "queued")
        expect(yield* queueDepth(queue)).toBe(1)
      }).pipe(Effect.provide(orderService({ COMMAND_QUEUE: queue })))
    }), 30_000)

  it.scopedLive("accepts orders while no broker answers: 201 at once, ready with the broker down and the outbox counting them", () =>
    Effect.gen(function*() {
      const queue = uniqueQueueName("nobroker")
      yield* Effect.gen(function*() {
        const started = Date.now()
        const response = yield* postOrder(7)
        expect(response.status).toBe(201)
        expect(Date.now() - started).toBeLessThan(1000)
        const { order } = (yield* response.json) as { order: { orderId: string } }
        const ready = yield* getJson("/health/ready").pipe(
          Effect.filterOrFail(({ body }) => body.outbox.pending === 1),
          Effect.retry(Schedule.spaced("50 millis").pipe(Schedule.upTo("5 seconds")))
        )
        expect(ready).toMatchObject({ status: 200, body: { store: "up", broker: "down" } })
        expect((yield* getJson(`/orders/${order.orderId}`)).body.status).toBe("accepted")
        expect((yield* HttpClient.get("/health/live")).status).toBe(200)
      }).pipe(Effect.provide(orderService({ COMMAND_QUEUE: queue, AMQP_URL: "amqp://guest:guest@127.0.0.1:1", PUBLISH_TIMEOUT_MS: 1000 })))
    }))

  it.scopedLive("gives 3,000 orders, 200 at a time, 3,000 distinct ids, every one relayed to the queue", () =>
    Effect.gen(function*() {
      const queue = uniqueQueueName("concurrent")
      yield* testBroker(queue)
      yield* Effect.gen(function*() {
        yield* awaitBroker
        const responses = yield* Effect.all(
          Array.from({ length: 3000 }, (_, i) =>
            postOrder(i + 1).pipe(
              Effect.flatMap((response) => response.json),
              Effect.map((body) => (body as { order: { orderId: string } }).order.orderId)
            )),
          { concurrency: 200 }
        )
        expect(new Set(responses).size).toBe(3000)
        yield* eventually(() => Effect.runPromise(queueDepth(queue)), (depth) => depth === 3000, { what: "3,000 commands on the queue" })
        const ready = yield* getJson("/health/ready").pipe(
          Effect.filterOrFail(({ body }) => body.outbox.pending === 0),
          Effect.retry(Schedule.spaced("50 millis").pipe(Schedule.upTo("5 seconds")))
        )
        expect(ready.body.outbox.pending).toBe(0)
      }).pipe(Effect.provide(orderService({ COMMAND_QUEUE: queue })))
    }), 60_000)
})
