import { describe, expect, it } from "@effect/vitest"
import type * as amqp from "amqplib"
import { ConfigProvider, Duration, Effect, Layer, Option, Tracer } from "effect"
import { currentTraceHeaders, formatTraceparent, parseTraceparent, withConsumeSpan } from "../../src/observability/TraceContext"
import { resolveTraceExport, TracingConfig, TracingLive } from "../../src/observability/Tracing"

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
        Effect.withSpan("CommandPublisher.publish")
      )
      expect(headers).toEqual({ traceparent: `00-${span.traceId}-${span.spanId}-01` })

      const outsideSpan = yield* currentTraceHeaders
      expect(outsideSpan).toBeUndefined()

      // TracingLive with no endpoint switches Effect's tracer off: spans are no-ops, no header.
      const off = yield* currentTraceHeaders.pipe(
        Effect.withSpan("CommandPublisher.publish"),
        Effect.provide(TracingLive("order-service").pipe(Layer.provide(withEnv({}))))
      )
      expect(off).toBeUndefined()
    }))

  it.effect("make the consume span a child of the publish span, or a new root without one", () =>
    Effect.gen(function*() {
      const message = (headers: Record<string, unknown>) =>
        ({ content: Buffer.from("{}"), fields: { deliveryTag: 1, redelivered: false }, properties: { headers, messageId: "m" } }) as unknown as amqp.Message
      const parent = { traceId: "0af7651916cd43dd8448eb211c80319c", spanId: "b7ad6b7169203331" }
      const child = yield* Effect.currentSpan.pipe(
        withConsumeSpan(message({ traceparent: `00-${parent.traceId}-${parent.spanId}-01` }), "q"),
        Effect.withSpan("some unrelated outer span")
      )
      expect(child.name).toBe("CommandConsumer.consume")
      expect(child.kind).toBe("consumer")
      expect(child.traceId).toBe(parent.traceId)
      expect(Option.map(child.parent, (span) => span.spanId)).toEqual(Option.some(parent.spanId))
      expect(child.attributes.get("messaging.destination.name")).toBe("q")

      const root = yield* Effect.currentSpan.pipe(withConsumeSpan(message({}), "q"), Effect.withSpan("outer"))
      expect(root.parent).toEqual(Option.none())
      expect(root.traceId).not.toBe(parent.traceId)
    }))
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
