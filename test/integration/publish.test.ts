import { HttpClient, HttpClientRequest } from "@effect/platform"
import { describe, expect, it } from "@effect/vitest"
import { Effect, Schedule } from "effect"
import { queueDeclaration, testBroker, uniqueQueueName } from "../support/broker"
import { orderService } from "../support/services"

const postOrder = (userId: number) =>
  HttpClientRequest.post("/orders").pipe(HttpClientRequest.bodyUnsafeJson({ userId }), HttpClient.execute)

/** Ready means the confirm channel is open and the topology declared: an event we can poll cheaply. */
const awaitReady = HttpClient.get("/health/ready").pipe(
  Effect.filterOrFail((response) => response.status === 200),
  Effect.retry(Schedule.spaced("20 millis").pipe(Schedule.upTo("15 seconds")))
)

describe("order service against the real broker", () => {
  it.scopedLive("puts the contract's message on a durable quorum queue once POST /orders answers 201", () =>
    Effect.gen(function*() {
      const queue = uniqueQueueName("publish")
      const { channel } = yield* testBroker(queue)
      yield* Effect.gen(function*() {
        yield* awaitReady
        const response = yield* postOrder(42)
        expect(response.status).toBe(201)
        const { order } = (yield* response.json) as { order: { orderId: string; userId: number } }

        // The 201 came after the broker's confirm: the message is there now, no waiting needed.
        const message = yield* Effect.promise(() => channel.get(queue, { noAck: true }))
        expect(message).not.toBe(false)
        if (message === false) return
        expect(JSON.parse(message.content.toString())).toEqual({ orderId: order.orderId, userId: 42 })
        expect(message.properties).toMatchObject({
          deliveryMode: 2,
          contentType: "application/json",
          messageId: order.orderId,
          type: "SendNotificationCommand",
          appId: "order-service"
        })
        expect(typeof message.properties.timestamp).toBe("number")

        const declared = yield* Effect.promise(() => channel.checkQueue(queue))
        expect(declared.messageCount).toBe(0)

        const commandQueue = yield* queueDeclaration(queue)
        expect(commandQueue).toMatchObject({ type: "quorum", durable: true })
        for (const argument of ['"x-dead-letter-exchange",[]', `"x-dead-letter-routing-key","${queue}.dlq"`, '"x-dead-letter-strategy","at-least-once"', '"x-overflow","reject-publish"']) {
          expect(commandQueue?.arguments).toContain(argument)
        }
        expect(yield* queueDeclaration(`${queue}.dlq`)).toMatchObject({ type: "quorum", durable: true })
      }).pipe(Effect.provide(orderService({ COMMAND_QUEUE: queue })))
    }))

  it.scopedLive("answers 503 when the broker returns the command as unroutable (mandatory), accepting nothing", () =>
    Effect.gen(function*() {
      const queue = uniqueQueueName("unroutable")
      const { channel } = yield* testBroker(queue)
      yield* Effect.gen(function*() {
        yield* awaitReady
        // Someone deletes the queue under the running service: there is nowhere to route to.
        yield* Effect.promise(() => channel.deleteQueue(queue))
        const response = yield* postOrder(7)
        expect(response.status).toBe(503)
        expect(response.headers["retry-after"]).toBe("1")
        const body = (yield* response.json) as { _tag: string; message: string }
        expect(body._tag).toBe("BrokerUnavailable")
        expect(body.message).toContain("could not route")
      }).pipe(Effect.provide(orderService({ COMMAND_QUEUE: queue })))
    }))

  it.scopedLive("answers 503 at once when no broker answers, and is not ready", () =>
    Effect.gen(function*() {
      const queue = uniqueQueueName("nobroker")
      yield* Effect.gen(function*() {
        const started = Date.now()
        const response = yield* postOrder(7)
        expect(response.status).toBe(503)
        expect(Date.now() - started).toBeLessThan(1000)
        expect(((yield* response.json) as { _tag: string })._tag).toBe("BrokerUnavailable")
        expect((yield* HttpClient.get("/health/ready")).status).toBe(503)
        expect((yield* HttpClient.get("/health/live")).status).toBe(200)
      }).pipe(Effect.provide(orderService({ COMMAND_QUEUE: queue, AMQP_URL: "amqp://guest:guest@127.0.0.1:1", PUBLISH_TIMEOUT_MS: 1000 })))
    }))

  it.scopedLive("gives 3,000 concurrent orders 3,000 distinct ids, every one on the queue", () =>
    Effect.gen(function*() {
      const queue = uniqueQueueName("concurrent")
      const { channel } = yield* testBroker(queue)
      yield* Effect.gen(function*() {
        yield* awaitReady
        const responses = yield* Effect.all(
          Array.from({ length: 3000 }, (_, i) =>
            postOrder(i + 1).pipe(
              Effect.flatMap((response) => response.json),
              Effect.map((body) => (body as { order: { orderId: string } }).order.orderId)
            )),
          { concurrency: "unbounded" }
        )
        expect(new Set(responses).size).toBe(3000)
        const declared = yield* Effect.promise(() => channel.checkQueue(queue))
        expect(declared.messageCount).toBe(3000)
      }).pipe(Effect.provide(orderService({ COMMAND_QUEUE: queue })))
    }), 60_000)
})
