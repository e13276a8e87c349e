import { describe, expect, it } from "@effect/vitest"
import { Effect } from "effect"
import { randomBytes } from "node:crypto"
import { HttpClient, HttpClientRequest } from "@effect/platform"
import { Layer, Schedule } from "effect"
import { TracingLive } from "../../src/observability/Tracing"
import { AMQP_URL, eventually, testBroker, testConfig, uniqueQueueName } from "../support/broker"
import { otlpReceiver, type ReceivedSpan } from "../support/observability"
import { freePort, spawnService } from "../support/processes"
import { orderService } from "../support/services"

const SERVER = 2
const PRODUCER = 4
const CONSUMER = 5

/** 200, and (for the order service) the broker up too, so the relay publishes the order at its first try. */
const ready = (url: string) =>
  eventually(
    () => fetch(url).then(async (response) => ({ status: response.status, body: await response.json() as { broker?: string } }), () => undefined),
    (answer) => answer?.status === 200 && (answer.body.broker === undefined || answer.body.broker === "up"),
    { what: `${url} to answer 200`, timeoutMs: 25_000 }
  )

const postOrder = (port: number, headers: Record<string, string> = {}) =>
  Effect.promise(async () => {
    const response = await fetch(`http://127.0.0.1:${port}/orders`, {
      method: "POST",
      headers: { "content-type": "application/json", ...headers },
      body: JSON.stringify({ userId: 42 })
    })
    expect(response.status).toBe(201)
    return ((await response.json()) as { order: { orderId: string } }).order.orderId
  })

/** The spans of one order's trace, from the request to the event back. */
const CHAIN = [
  "http.server POST",
  "OutboxRelay.publish",
  "CommandConsumer.consume",
  "NotificationSender.send",
  "EventPublisher.publish",
  "EventConsumer.consume"
]

/** Waits until the receiver holds the whole path of one order: request, relay, consume, send, event back. */
const awaitTrace = (spans: Array<ReceivedSpan>, traceId: (spans: Array<ReceivedSpan>) => string | undefined) =>
  eventually(
    async () => {
      const id = traceId(spans)
      return id === undefined ? [] : spans.filter((span) => span.traceId === id)
    },
    (trace) => CHAIN.every((name) => trace.some((span) => span.name === name)),
    { what: "the spans of the order's trace", timeoutMs: 20_000 }
  )

const byName = (trace: ReadonlyArray<ReceivedSpan>, name: string) => {
  const matching = trace.filter((span) => span.name === name)
  expect(matching, name).toHaveLength(1)
  return matching[0]!
}

/**
 * The chain request -> relay's publish -> consume -> send, and consume -> event published -> event
 * consumed by the order service, each span the parent of the next.
 */
const expectOneChain = (trace: ReadonlyArray<ReceivedSpan>, orderId: string) => {
  const request = byName(trace, "http.server POST")
  const publish = byName(trace, "OutboxRelay.publish")
  const consume = byName(trace, "CommandConsumer.consume")
  const send = byName(trace, "NotificationSender.send")
  const event = byName(trace, "EventPublisher.publish")
  const eventConsumed = byName(trace, "EventConsumer.consume")

  expect(request).toMatchObject({ serviceName: "order-service", kind: SERVER })
  expect(request.attributes["http.response.status_code"]).toBe(201)
  expect(publish).toMatchObject({ serviceName: "order-service", kind: PRODUCER, parentSpanId: request.spanId })
  expect(publish.attributes["messaging.message.id"]).toBe(orderId)
  expect(consume).toMatchObject({ serviceName: "notification-service", kind: CONSUMER, parentSpanId: publish.spanId })
  expect(consume.attributes["messaging.message.id"]).toBe(orderId)
  expect(send).toMatchObject({ serviceName: "notification-service", parentSpanId: consume.spanId })
  expect(send.attributes["orderId"]).toBe(orderId)
  expect(event).toMatchObject({ serviceName: "notification-service", kind: PRODUCER, parentSpanId: consume.spanId })
  expect(eventConsumed).toMatchObject({ serviceName: "order-service", kind: CONSUMER, parentSpanId: event.spanId })
  return request
}

describe("one trace from the HTTP request through the queue to the send", () => {
  it.scopedLive("across two processes, continuing the caller's traceparent, exported as OTLP/HTTP JSON", () =>
    Effect.gen(function*() {
      const queue = uniqueQueueName("trace")
      yield* testBroker(queue)
      const receiver = yield* otlpReceiver
      const [orderPort, notificationPort] = [yield* freePort, yield* freePort]
      const otel = {
        AMQP_URL,
        COMMAND_QUEUE: queue,
        OTEL_EXPORTER_OTLP_ENDPOINT: receiver.url,
        OTEL_EXPORTER_OTLP_PROTOCOL: "http/json",
        OTEL_BSP_SCHEDULE_DELAY: 100
      }
      yield* spawnService("order/main.ts", { ...otel, PORT: orderPort })
      yield* spawnService("notification/main.ts", {
        ...otel,
        NOTIFICATION_HEALTH_PORT: notificationPort,
        NOTIFICATION_SEND_DELAY_MS: 10
      })
      yield* ready(`http://127.0.0.1:${orderPort}/health/ready`)
      yield* ready(`http://127.0.0.1:${notificationPort}/health/ready`)

      // The caller's own trace: the order's spans must join it.
      const callerTraceId = randomBytes(16).toString("hex")
      const callerSpanId = randomBytes(8).toString("hex")
      const orderId = yield* postOrder(orderPort, { traceparent: `00-${callerTraceId}-${callerSpanId}-01` })

      const trace = yield* awaitTrace(receiver.spans, () => callerTraceId)
      const request = expectOneChain(trace, orderId)
      expect(request.parentSpanId).toBe(callerSpanId)

      // Scrapes and probes start no traces.
      yield* Effect.promise(() => fetch(`http://127.0.0.1:${orderPort}/metrics`).then((r) => r.text()))
      expect(receiver.spans.filter((span) => String(span.attributes["url.path"] ?? "").match(/metrics|health/))).toEqual([])
      expect(receiver.requests.every((r) => r.path === "/v1/traces" && r.contentType === "application/json")).toBe(true)
    }), 60_000)

  it.scopedLive("in one process (npm start), each service under its own name, a new trace per request, over protobuf by default", () =>
    Effect.gen(function*() {
      // Two programs, each with its own queue, so neither consumes the other's commands.
      const [queue, queue2] = [uniqueQueueName("trace-protobuf"), uniqueQueueName("trace-one-process")]
      yield* testBroker(queue)
      yield* testBroker(queue2)
      const protobuf = yield* otlpReceiver
      const json = yield* otlpReceiver
      const [orderPort, notificationPort] = [yield* freePort, yield* freePort]
      const env = {
        AMQP_URL,
        COMMAND_QUEUE: queue,
        PORT: orderPort,
        NOTIFICATION_HEALTH_PORT: notificationPort,
        NOTIFICATION_SEND_DELAY_MS: 10,
        OTEL_BSP_SCHEDULE_DELAY: 100
      }
      // The same program twice: with the default protocol, and with JSON to read the spans back.
      yield* spawnService("main.ts", { ...env, OTEL_EXPORTER_OTLP_ENDPOINT: protobuf.url })
      const [orderPort2, notificationPort2] = [yield* freePort, yield* freePort]
      yield* spawnService("main.ts", {
        ...env,
        COMMAND_QUEUE: queue2,
        PORT: orderPort2,
        NOTIFICATION_HEALTH_PORT: notificationPort2,
        OTEL_EXPORTER_OTLP_ENDPOINT: json.url,
        OTEL_EXPORTER_OTLP_PROTOCOL: "http/json"
      })
      for (const port of [orderPort, notificationPort, orderPort2, notificationPort2]) {
        yield* ready(`http://127.0.0.1:${port}/health/ready`)
      }

      const orderId = yield* postOrder(orderPort2)
      const trace = yield* awaitTrace(json.spans, (spans) =>
        spans.find((span) => span.name === "OutboxRelay.publish" && span.attributes["messaging.message.id"] === orderId)
          ?.traceId)
      const request = expectOneChain(trace, orderId)
      expect(request.parentSpanId).toBeUndefined()

      // Protobuf: no decoder here, but the body must be protobuf carrying both services' spans.
      const protobufOrderId = yield* postOrder(orderPort)
      const sent = yield* eventually(
        async () => Buffer.concat(protobuf.requests.filter((r) => r.path === "/v1/traces").map((r) => r.body)),
        (bytes) => ["notification-service", "order-service", "NotificationSender.send", protobufOrderId].every((text) => bytes.includes(text)),
        { what: "protobuf exports with both services' spans" }
      )
      // Each program exports its own spans: the JSON one has none of the protobuf program's order.
      // (Not the other way round: events go to one shared exchange, so each order service also
      // receives, and acks as unknown, the other program's events.)
      expect(sent.length).toBeGreaterThan(0)
      expect(json.spans.filter((span) => span.attributes["messaging.message.id"] === protobufOrderId)).toEqual([])
      expect(protobuf.requests.every((r) => r.contentType === "application/x-protobuf")).toBe(true)
    }), 60_000)

  it.scopedLive("an unreachable tracing backend fails no request", () =>
    Effect.gen(function*() {
      const queue = uniqueQueueName("trace-unreachable")
      yield* testBroker(queue)
      const closedPort = yield* freePort
      const env = {
        COMMAND_QUEUE: queue,
        OTEL_EXPORTER_OTLP_ENDPOINT: `http://127.0.0.1:${closedPort}`,
        OTEL_BSP_SCHEDULE_DELAY: 10
      }
      yield* Effect.gen(function*() {
        yield* HttpClient.get("/health/ready").pipe(
          Effect.filterOrFail((response) => response.status === 200),
          Effect.retry(Schedule.spaced("20 millis").pipe(Schedule.upTo("15 seconds")))
        )
        for (let i = 0; i < 20; i++) {
          const response = yield* HttpClientRequest.post("/orders").pipe(
            HttpClientRequest.bodyUnsafeJson({ userId: i + 1 }),
            HttpClient.execute,
            Effect.timeout("5 seconds")
          )
          expect(response.status).toBe(201)
        }
      }).pipe(Effect.provide(orderService(env).pipe(Layer.provide(TracingLive("order-service")), Layer.provide(testConfig(env)))))
    }), 60_000)
})
