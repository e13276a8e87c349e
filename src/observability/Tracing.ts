import * as OtlpSerialization from "@effect/opentelemetry/OtlpSerialization"
import * as OtlpTracer from "@effect/opentelemetry/OtlpTracer"
import { FetchHttpClient, HttpMiddleware } from "@effect/platform"
import { Config, type ConfigError, Duration, Effect, Layer, Option } from "effect"
import * as Env from "../config/Env"

/**
 * Tracing from the standard OpenTelemetry variables. With no OTLP endpoint, Effect's tracer is
 * switched off, so every `withSpan` (and the HTTP server's request span) is a shared no-op: no ids,
 * no clock reads, no trace headers on messages. With one, spans go over OTLP/HTTP through
 * `@effect/opentelemetry`'s `OtlpTracer`, batched off the request path.
 */

const isHttpUrl = (raw: string) => {
  try {
    const url = new URL(raw)
    return url.protocol === "http:" || url.protocol === "https:"
  } catch {
    return false
  }
}

const optionalUrl = (name: string) =>
  Env.validString(name, "", "an http:// or https:// URL", isHttpUrl).pipe(
    Config.map((url) => (url === "" ? Option.none<string>() : Option.some(url)))
  )

const PROTOCOLS = ["http/protobuf", "http/json"] as const

/** `key1=value1,key2=value2`, values percent-encoded (the OTel format for headers and attributes). */
export const parseKeyValueList = (raw: string): Record<string, string> => {
  const entries: Record<string, string> = {}
  for (const pair of raw.split(",")) {
    const at = pair.indexOf("=")
    if (at <= 0) continue
    const key = pair.slice(0, at).trim()
    const value = pair.slice(at + 1).trim()
    try {
      entries[key] = decodeURIComponent(value)
    } catch {
      entries[key] = value
    }
  }
  return entries
}

const optionalString = (name: string) =>
  Config.string(name).pipe(Config.option, Config.map(Option.filter((value) => value.trim() !== "")))

export const TracingConfig = Config.all({
  sdkDisabled: Env.oneOf("OTEL_SDK_DISABLED", ["true", "false"], "false"),
  tracesExporter: Env.oneOf("OTEL_TRACES_EXPORTER", ["otlp", "none"], "otlp"),
  endpoint: optionalUrl("OTEL_EXPORTER_OTLP_ENDPOINT"),
  tracesEndpoint: optionalUrl("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"),
  protocol: Env.oneOf("OTEL_EXPORTER_OTLP_PROTOCOL", PROTOCOLS, "http/protobuf"),
  tracesProtocol: Env.oneOf("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", [...PROTOCOLS, ""], ""),
  headers: optionalString("OTEL_EXPORTER_OTLP_HEADERS"),
  tracesHeaders: optionalString("OTEL_EXPORTER_OTLP_TRACES_HEADERS"),
  serviceName: optionalString("OTEL_SERVICE_NAME"),
  resourceAttributes: optionalString("OTEL_RESOURCE_ATTRIBUTES"),
  scheduleDelay: Env.integer("OTEL_BSP_SCHEDULE_DELAY", 5000, { min: 1, max: 3_600_000 }),
  maxExportBatchSize: Env.integer("OTEL_BSP_MAX_EXPORT_BATCH_SIZE", 512, { min: 1, max: 1_000_000 })
})

export interface OtlpTraceExport {
  readonly url: string
  readonly protocol: typeof PROTOCOLS[number]
  readonly headers: Record<string, string>
  readonly serviceName: string
  readonly exportInterval: Duration.Duration
  readonly maxBatchSize: number
}

/** Where and how spans are exported, or None when tracing is off. */
export const resolveTraceExport = (
  config: Config.Config.Success<typeof TracingConfig>,
  defaultServiceName: string
): Option.Option<OtlpTraceExport> => {
  if (config.sdkDisabled === "true" || config.tracesExporter === "none") return Option.none()
  const url = Option.orElse(
    config.tracesEndpoint,
    () => Option.map(config.endpoint, (base) => `${base.replace(/\/+$/, "")}/v1/traces`)
  )
  if (Option.isNone(url)) return Option.none()
  const resourceAttributes: Record<string, string> = Option.match(config.resourceAttributes, {
    onNone: () => ({}),
    onSome: parseKeyValueList
  })
  return Option.some({
    url: url.value,
    protocol: config.tracesProtocol === "" ? config.protocol : config.tracesProtocol,
    headers: {
      ...Option.match(config.headers, { onNone: () => ({}), onSome: parseKeyValueList }),
      ...Option.match(config.tracesHeaders, { onNone: () => ({}), onSome: parseKeyValueList })
    },
    // OTEL_SERVICE_NAME wins over OTEL_RESOURCE_ATTRIBUTES' service.name, as the spec says.
    serviceName: Option.getOrElse(config.serviceName, () => resourceAttributes["service.name"] ?? defaultServiceName),
    exportInterval: Duration.millis(config.scheduleDelay),
    maxBatchSize: config.maxExportBatchSize
  })
}

// Scrapes and probes would each start a trace of their own.
const UNTRACED_PATHS = new Set(["/metrics", "/health/live", "/health/ready", "/docs", "/openapi.json"])

const TracingOff = Layer.mergeAll(
  Layer.setTracerEnabled(false),
  Layer.locallyScoped(HttpMiddleware.currentTracerDisabledWhen, () => true)
)

/**
 * The tracer for one service, named `serviceName` unless `OTEL_SERVICE_NAME` says otherwise.
 * Provide it around the whole service Layer, so that its server, publisher and consumer fibers
 * all see it; two services in one process (`npm start`) each get their own, with their own name.
 */
export const TracingLive = (serviceName: string): Layer.Layer<never, ConfigError.ConfigError> =>
  Layer.unwrapEffect(
    Effect.map(TracingConfig, (config) =>
      Option.match(resolveTraceExport(config, serviceName), {
        onNone: () => TracingOff,
        onSome: (target) =>
          Layer.mergeAll(
            OtlpTracer.layer({
              url: target.url,
              // OtlpTracer adds OTEL_RESOURCE_ATTRIBUTES itself.
              resource: { serviceName: target.serviceName },
              headers: target.headers,
              exportInterval: target.exportInterval,
              maxBatchSize: target.maxBatchSize
            }).pipe(
              Layer.provide(
                target.protocol === "http/json" ? OtlpSerialization.layerJson : OtlpSerialization.layerProtobuf
              ),
              Layer.provide(FetchHttpClient.layer)
            ),
            Layer.locallyScoped(
              HttpMiddleware.currentTracerDisabledWhen,
              (request) => UNTRACED_PATHS.has(request.url.split("?")[0]!)
            )
          )
      }))
  )
