import type * as amqp from "amqplib"
import { Context, Effect, FiberRef, Option, Tracer } from "effect"

/**
 * W3C trace context (`traceparent`) across the queue: the publisher writes its span into the
 * message headers, the consumer continues that trace. AMQP header values may arrive as Buffers.
 *
 * Ours, not `@effect/platform`'s `HttpTraceContext`: its `w3c` parser accepts the all-zero ids and
 * malformed flags that W3C says to ignore, and its `toHeaders` takes only a full `Span` (not an
 * external parent), adds a `b3` header, and writes `00-noop-noop-00` for a no-op span.
 */

/**
 * Whether the service is traced (`TracingLive` with an OTLP endpoint). Services read it once, when
 * their Layer is built, and leave their per-request and per-delivery spans out entirely while it is
 * false: a span with tracing off is a no-op, but building and ending it is a cost per delivery
 * worth skipping (docs/performance.md, "What the profiles showed").
 */
export const tracingEnabled: Effect.Effect<boolean> = FiberRef.get(FiberRef.currentTracerEnabled)

const TRACE_ID = /^[0-9a-f]{32}$/
const SPAN_ID = /^[0-9a-f]{16}$/
const INVALID_TRACE_ID = "00000000000000000000000000000000"
const INVALID_SPAN_ID = "0000000000000000"

/** `00-<trace id>-<span id>-<flags>` for a span, or undefined for one that is not real (tracing off). */
export const formatTraceparent = (span: Tracer.AnySpan): string | undefined =>
  TRACE_ID.test(span.traceId) && SPAN_ID.test(span.spanId)
    ? `00-${span.traceId}-${span.spanId}-${span.sampled ? "01" : "00"}`
    : undefined

/** The remote parent a `traceparent` names, if it is a valid version-00 one. */
export const parseTraceparent = (value: unknown): Option.Option<Tracer.ExternalSpan> => {
  const text = typeof value === "string" ? value : Buffer.isBuffer(value) ? value.toString("latin1") : undefined
  if (text === undefined) return Option.none()
  const parts = text.trim().toLowerCase().split("-")
  if (parts.length < 4 || parts[0] !== "00") return Option.none()
  const [, traceId, spanId, flags] = parts as [string, string, string, string]
  if (!TRACE_ID.test(traceId) || !SPAN_ID.test(spanId) || !/^[0-9a-f]{2}$/.test(flags)) return Option.none()
  if (traceId === INVALID_TRACE_ID || spanId === INVALID_SPAN_ID) return Option.none()
  return Option.some(Tracer.externalSpan({ traceId, spanId, sampled: (parseInt(flags, 16) & 1) === 1 }))
}

/**
 * The headers that carry the current span to the consumer: `{ traceparent }`, or undefined when
 * there is no real span (tracing is off), so that nothing is added to the message then.
 */
export const currentTraceHeaders: Effect.Effect<Record<string, string> | undefined> = Effect.withFiberRuntime(
  (fiber) => {
    const span = Context.getOption(fiber.currentContext, Tracer.ParentSpan)
    if (Option.isNone(span)) return Effect.succeed(undefined)
    const traceparent = formatTraceparent(span.value)
    return Effect.succeed(traceparent === undefined ? undefined : { traceparent })
  }
)

/**
 * Runs the processing of one delivery in a span `spanName` (kind consumer) whose parent is the
 * publisher's span named in the message's `traceparent`, so the trace that began with the HTTP
 * request goes on here; a message without one starts a trace of its own.
 */
export const withConsumeSpan = (message: amqp.Message, queue: string, spanName: string) =>
<A, E, R>(process: Effect.Effect<A, E, R>): Effect.Effect<A, E, R> => {
  const parent = parseTraceparent(message.properties.headers?.["traceparent"])
  const attributes = {
    "messaging.system": "rabbitmq",
    "messaging.operation.type": "process",
    "messaging.destination.name": queue,
    "messaging.message.id": String(message.properties.messageId ?? ""),
    "messaging.rabbitmq.message.delivery_tag": message.fields.deliveryTag,
    "messaging.rabbitmq.message.redelivered": message.fields.redelivered
  }
  // No stack trace: it would allocate an Error per delivery, even with tracing off.
  const options = { kind: "consumer", captureStackTrace: false, attributes } as const
  return Option.isSome(parent)
    ? Effect.withSpan(process, spanName, { ...options, parent: parent.value })
    : Effect.withSpan(process, spanName, { ...options, root: true })
}
