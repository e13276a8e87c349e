import * as OtelMetrics from "@effect/opentelemetry/Metrics"
import * as OtelResource from "@effect/opentelemetry/Resource"
import { HttpApiBuilder, HttpServerResponse } from "@effect/platform"
import { PrometheusSerializer } from "@opentelemetry/exporter-prometheus"
import type { ResourceMetrics } from "@opentelemetry/sdk-metrics"
import { Effect, Layer, MetricLabel } from "effect"

/**
 * What every feature's metrics share: Effect `Metric`s, defined by the feature that counts them
 * (`order/OrderMetrics.ts`, `notification/NotificationMetrics.ts`), updated on the hot path through
 * pre-built label sets (a constant label array hits Effect's per-metric hook cache; `Metric.tagged`
 * would allocate a key per update), and served as Prometheus text by `MetricsRoute`.
 */

export const label = (key: string, value: string): ReadonlyArray<MetricLabel.MetricLabel> => [MetricLabel.make(key, value)]
export const NO_LABELS: ReadonlyArray<MetricLabel.MetricLabel> = []

/** Seconds since `startedAt` (a `performance.now()`), real time even under a TestClock. */
export const secondsSince = (startedAt: number) => (performance.now() - startedAt) / 1000

// ---------------------------------------------------------------------------------------------
// GET /metrics

export const ORDER_METRICS = (name: string) => name.startsWith("order")
export const NOTIFICATION_METRICS = (name: string) => name.startsWith("notification_")

export const PROMETHEUS_CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

/**
 * Keeps one service's metrics: Effect's registry is global, and `npm start` runs both services in
 * one process. Drops the unit "1" the bridge gives every Effect metric (Prometheus names carry
 * their unit, as in `_seconds`).
 */
const onlyMetrics = (include: (name: string) => boolean) => (resourceMetrics: ResourceMetrics): ResourceMetrics => ({
  ...resourceMetrics,
  scopeMetrics: resourceMetrics.scopeMetrics.map((scope) => ({
    ...scope,
    metrics: scope.metrics
      .filter((metric) => include(metric.descriptor.name))
      .map((metric) => ({ ...metric, descriptor: { ...metric.descriptor, unit: "" } }))
  }))
})

/**
 * `GET /metrics` beside an `HttpApi`: Effect's metrics bridged to OpenTelemetry's data model by
 * `@effect/opentelemetry`, written as Prometheus text by OpenTelemetry's `PrometheusSerializer`.
 * `target_info` carries `service_name`.
 */
export const MetricsRoute = (options: {
  readonly serviceName: string
  readonly include: (metricName: string) => boolean
}) =>
  HttpApiBuilder.Router.use((router) =>
    Effect.gen(function*() {
      const producer = yield* OtelMetrics.makeProducer
      const serializer = new PrometheusSerializer(undefined, false, undefined, false, true)
      const select = onlyMetrics(options.include)
      yield* router.get(
        "/metrics",
        Effect.promise(() => producer.collect()).pipe(
          Effect.map(({ resourceMetrics }) =>
            HttpServerResponse.text(serializer.serialize(select(resourceMetrics)), {
              contentType: PROMETHEUS_CONTENT_TYPE
            })
          )
        )
      )
    })
  ).pipe(Layer.provide(OtelResource.layer({ serviceName: options.serviceName })))
