import { HttpClient, HttpClientRequest } from "@effect/platform"
import { describe, expect, it } from "@effect/vitest"
import type * as amqp from "amqplib"
import { ConfigProvider, Duration, Effect, Layer, Option, Tracer } from "effect"
import { UserId } from "../../src/domain/Order"
import { currentTraceHeaders, formatTraceparent, parseTraceparent, withConsumeSpan } from "../../src/observability/TraceContext"
import { resolveTraceExport, TracingConfig, TracingLive } from "../../src/observability/Tracing"
import { Orders } from "../../src/order/Orders"
import { OrderStore } from "../../src/order/store/OrderStore"
import { orderApi, relayDouble, sqliteOrderStore } from "../support/orderDoubles"

const withEnv = (values: Record<string, string>) =>
  Layer.setConfigProvider(ConfigProvider.fromMap(new Map(Object.entries(values))))

const resolve = (values: Record<string, string>) =>
  TracingConfig.pipe(
    Effect.map((config) => resolveTraceExport(config, "order-service")),
    Effect.provide(withEnv(values))
  )

describe("traceparent in message headers", () => {
  it("round-trips a span's context", () => {
    const span = Tracer.externalSpan({ traceId: "0af7651916cd43dd8448eb211c80319c", spanId: "b7ad6b7169203331", sampled: true })
    const header = formatTraceparent(span)
    expect(header).toBe("00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01")
    expect(parseTraceparent(header)).toEqual(Option.some(span))
    // amqplib may hand a header over as a Buffer.
    expect(parseTraceparent(Buffer.from(header!))).toEqual(Option.some(span))
  })

  it("reads the sampled flag and refuses what is not a version-00 traceparent", () => {
    const unsampled = parseTraceparent("00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-00")
    expect(Option.map(unsampled, (span) => span.sampled)).toEqual(Option.some(false))
    for (
      const bad of [
        undefined,
        42,
        "",
        "garbage",
        "01-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
        "00-0af7651916cd43dd8448eb211c8031-b7ad6b7169203331-01",
        "00-00000000000000000000000000000000-b7ad6b7169203331-01",
        "00-0af7651916cd43dd8448eb211c80319c-0000000000000000-01",
        "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-zz"
      ]
    ) {
      expect(parseTraceparent(bad)).toEqual(Option.none())
    }
  })

  it.effect("are the publish span's context while tracing is on, and absent while it is off", () =>
    Effect.gen(function*() {
      const [headers, span] = yield* Effect.all([currentTraceHeaders, Effect.currentSpan]).pipe(
        Effect.withSpan("OutboxRelay.publish")
      )
      expect(headers).toEqual({ traceparent: `00-${span.traceId}-${span.spanId}-01` })

      const outsideSpan = yield* currentTraceHeaders
      expect(outsideSpan).toBeUndefined()

      // TracingLive with no endpoint switches Effect's tracer off: spans are no-ops, no header.
      const off = yield* currentTraceHeaders.pipe(
        Effect.withSpan("OutboxRelay.publish"),
        Effect.provide(TracingLive("order-service").pipe(Layer.provide(withEnv({}))))
      )
      expect(off).toBeUndefined()
    }))

  it.effect("make the consume span, named by its consumer, a child of the publish span, or a new root without one", () =>
    Effect.gen(function*() {
      const message = (headers: Record<string, unknown>) =>
        ({
          content: Buffer.from("{}"),
          fields: { deliveryTag: 7, redelivered: true },
          properties: { headers, messageId: "m" }
        }) as unknown as amqp.Message
      const parent = { traceId: "0af7651916cd43dd8448eb211c80319c", spanId: "b7ad6b7169203331" }
      const child = yield* Effect.currentSpan.pipe(
        withConsumeSpan(message({ traceparent: `00-${parent.traceId}-${parent.spanId}-01` }), "q", "CommandConsumer.consume"),
        Effect.withSpan("some unrelated outer span")
      )
      expect(child.name).toBe("CommandConsumer.consume")
      expect(child.kind).toBe("consumer")
      expect(child.traceId).toBe(parent.traceId)
      expect(Option.map(child.parent, (span) => span.spanId)).toEqual(Option.some(parent.spanId))
      expect(Object.fromEntries(child.attributes)).toEqual({
        "messaging.system": "rabbitmq",
        "messaging.operation.type": "process",
        "messaging.destination.name": "q",
        "messaging.message.id": "m",
        "messaging.rabbitmq.message.delivery_tag": 7,
        "messaging.rabbitmq.message.redelivered": true
      })

      const root = yield* Effect.currentSpan.pipe(
        withConsumeSpan(message({}), "events", "EventConsumer.consume"),
        Effect.withSpan("outer")
      )
      expect(root.name).toBe("EventConsumer.consume")
      expect(root.parent).toEqual(Option.none())
      expect(root.traceId).not.toBe(parent.traceId)
      expect(root.attributes.get("messaging.destination.name")).toBe("events")
    }))
})

describe("trace context stored with an order's command", () => {
  /** The headers stored with each order's command, by order id. */
  const outboxHeaders = Effect.flatMap(OrderStore, (store) =>
    Effect.map(store.claimOutbox(10), (entries) => new Map(entries.map((entry) => [entry.orderId as string, entry.headers]))))

  const ordersLive = Orders.Default.pipe(
    Layer.provideMerge(sqliteOrderStore),
    Layer.provide(relayDouble().layer),
    Layer.provide(withEnv({}))
  )

  it.scoped("is the creating span's, for the relay's publish to continue the trace; absent without a span or with tracing off", () =>
    Effect.gen(function*() {
      const orders = yield* Orders
      const idOf = Effect.map(({ order }: { readonly order: { readonly orderId: string } }) => order.orderId)
      const [span, traced] = yield* Effect.withSpan(
        Effect.all([Effect.currentSpan, idOf(orders.create(UserId.make(1), Option.none()))]),
        "POST /orders"
      )
      const outsideSpan = yield* idOf(orders.create(UserId.make(2), Option.none()))
      const tracingOff = yield* idOf(orders.create(UserId.make(3), Option.none())).pipe(
        Effect.withSpan("POST /orders"),
        Effect.provide(TracingLive("order-service").pipe(Layer.provide(withEnv({}))))
      )
      const headers = yield* outboxHeaders
      expect(headers.size).toBe(3)
      expect(headers.get(traced)).toEqual({ traceparent: `00-${span.traceId}-${span.spanId}-01` })
      expect(headers.get(outsideSpan)).toBeUndefined()
      expect(headers.get(tracingOff)).toBeUndefined()
    }).pipe(Effect.provide(ordersLive)))

  it.scoped("continues the HTTP request's trace, from the client's traceparent", () =>
    Effect.gen(function*() {
      const client = yield* Effect.withSpan(
        Effect.zipLeft(
          Effect.currentSpan,
          HttpClientRequest.post("/orders").pipe(HttpClientRequest.bodyText("{\"userId\":42}", "application/json"), HttpClient.execute)
        ),
        "client"
      )
      const stored = yield* outboxHeaders
      expect(stored.size).toBe(1)
      const [headers] = stored.values()
      const parent = Option.getOrThrow(parseTraceparent(headers?.["traceparent"]))
      expect(parent.traceId).toBe(client.traceId)
      // The server's own span, within the client's trace.
      expect(parent.spanId).not.toBe(client.spanId)
    }).pipe(Effect.provide(orderApi())))
})

describe("tracing configuration (standard OpenTelemetry variables)", () => {
  it.effect("is off without an endpoint, or when the SDK or the traces exporter is disabled", () =>
    Effect.gen(function*() {
      expect(yield* resolve({})).toEqual(Option.none())
      expect(yield* resolve({ OTEL_EXPORTER_OTLP_ENDPOINT: "http://jaeger:4318", OTEL_SDK_DISABLED: "true" })).toEqual(
        Option.none()
      )
      expect(yield* resolve({ OTEL_EXPORTER_OTLP_ENDPOINT: "http://jaeger:4318", OTEL_TRACES_EXPORTER: "none" })).toEqual(
        Option.none()
      )
    }))

  it.effect("sends to <endpoint>/v1/traces, or to the traces endpoint as given", () =>
    Effect.gen(function*() {
      const base = yield* resolve({ OTEL_EXPORTER_OTLP_ENDPOINT: "http://jaeger:4318/" })
      expect(Option.map(base, (t) => t.url)).toEqual(Option.some("http://jaeger:4318/v1/traces"))
      const specific = yield* resolve({
        OTEL_EXPORTER_OTLP_ENDPOINT: "http://jaeger:4318",
        OTEL_EXPORTER_OTLP_TRACES_ENDPOINT: "http://collector:4318/custom/traces"
      })
      expect(Option.map(specific, (t) => t.url)).toEqual(Option.some("http://collector:4318/custom/traces"))
    }))

  it.effect("honours protocol, headers, batching and the service name", () =>
    Effect.gen(function*() {
      const target = yield* resolve({
        OTEL_EXPORTER_OTLP_ENDPOINT: "https://otlp.example:4318",
        OTEL_EXPORTER_OTLP_PROTOCOL: "http/json",
        OTEL_EXPORTER_OTLP_HEADERS: "authorization=Bearer%20abc,x-team=orders",
        OTEL_EXPORTER_OTLP_TRACES_HEADERS: "x-team=traces",
        OTEL_BSP_SCHEDULE_DELAY: "250",
        OTEL_BSP_MAX_EXPORT_BATCH_SIZE: "64",
        OTEL_SERVICE_NAME: "orders-eu"
      })
      expect(Option.getOrThrow(target)).toMatchObject({
        protocol: "http/json",
        headers: { authorization: "Bearer abc", "x-team": "traces" },
        maxBatchSize: 64,
        serviceName: "orders-eu"
      })
      expect(Duration.toMillis(Option.getOrThrow(target).exportInterval)).toBe(250)

      const defaults = Option.getOrThrow(yield* resolve({ OTEL_EXPORTER_OTLP_ENDPOINT: "http://jaeger:4318" }))
      expect(defaults.protocol).toBe("http/protobuf")
      expect(defaults.serviceName).toBe("order-service")
      const fromAttributes = Option.getOrThrow(
        yield* resolve({ OTEL_EXPORTER_OTLP_ENDPOINT: "http://jaeger:4318", OTEL_RESOURCE_ATTRIBUTES: "service.name=a,x=y" })
      )
      expect(fromAttributes.serviceName).toBe("a")
    }))

  it.effect("refuses a protocol it cannot speak or an endpoint that is not a URL, naming the variable", () =>
    Effect.gen(function*() {
      const grpc = yield* Effect.flip(resolve({ OTEL_EXPORTER_OTLP_ENDPOINT: "http://jaeger:4317", OTEL_EXPORTER_OTLP_PROTOCOL: "grpc" }))
      expect(String(grpc)).toContain("OTEL_EXPORTER_OTLP_PROTOCOL must be one of http/protobuf, http/json")
      const notUrl = yield* Effect.flip(resolve({ OTEL_EXPORTER_OTLP_ENDPOINT: "jaeger:4318" }))
      expect(String(notUrl)).toContain("OTEL_EXPORTER_OTLP_ENDPOINT must be an http:// or https:// URL")
    }))
})
