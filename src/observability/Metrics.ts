import * as OtelMetrics from "@effect/opentelemetry/Metrics"
import * as OtelResource from "@effect/opentelemetry/Resource"
import { HttpApiBuilder, HttpServerResponse } from "@effect/platform"
import { PrometheusSerializer } from "@opentelemetry/exporter-prometheus"
import type { ResourceMetrics } from "@opentelemetry/sdk-metrics"
import type * as amqp from "amqplib"
import { Effect, Exit, Layer, Metric, MetricBoundaries, MetricLabel } from "effect"
import type { Settlement } from "../notification/Settlement"

/**
 * The services' metrics: Effect `Metric`s, updated on the hot path through pre-built label sets
 * (a constant label array hits Effect's per-metric hook cache; `Metric.tagged` would allocate a key
 * per update), and served as Prometheus text by `MetricsRoute`.
 */

const label = (key: string, value: string): ReadonlyArray<MetricLabel.MetricLabel> => [MetricLabel.make(key, value)]
const NO_LABELS: ReadonlyArray<MetricLabel.MetricLabel> = []

const seconds = (startedAt: number) => (performance.now() - startedAt) / 1000

// ---------------------------------------------------------------------------------------------
// Order service

export const ordersAccepted = Metric.counter("orders_accepted", {
  description: "Orders answered 201: their command was confirmed by the broker",
  incremental: true
})

export const ordersRefused = Metric.counter("orders_refused", {
  description: "Orders answered 503: their command was not confirmed (broker down, nack, unroutable, timeout)",
  incremental: true
})

export const publishDuration = Metric.histogram(
  "order_publish_duration_seconds",
  MetricBoundaries.fromIterable([0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10]),
  "Time from publishing a command to the broker's confirm or refusal"
)

const CONFIRMED = label("outcome", "confirmed")
const REFUSED = label("outcome", "refused")

/**
 * Times one publish and counts its order as accepted or refused. An interrupted publish (the
 * client went away, or shutdown) answered nothing and counts as neither.
 */
export const observePublish = <A, E, R>(publish: Effect.Effect<A, E, R>): Effect.Effect<A, E, R> =>
  Effect.suspend(() => {
    // performance.now, not the Effect Clock: this measures real latency even under a TestClock.
    const startedAt = performance.now()
    // `Effect.exit`, not `Effect.onExit`: nothing is recorded for an interruption anyway, and
    // `onExit`'s uninterruptible region cost a measurable share of each request's allocations.
    return Effect.flatMap(Effect.exit(publish), (exit) => {
      if (Exit.isSuccess(exit)) {
        publishDuration.unsafeUpdate(seconds(startedAt), CONFIRMED)
        ordersAccepted.unsafeUpdate(1, NO_LABELS)
      } else if (!Exit.isInterrupted(exit)) {
        publishDuration.unsafeUpdate(seconds(startedAt), REFUSED)
        ordersRefused.unsafeUpdate(1, NO_LABELS)
      }
      return exit
    })
  })

// ---------------------------------------------------------------------------------------------
// Notification service

export const commandsProcessed = Metric.counter("notification_commands_processed", {
  description: "Commands whose notification was sent and whose delivery was acked",
  incremental: true
})

export const commandsFailed = Metric.counter("notification_commands_failed", {
  description: "Send attempts that failed (each is retried or, on the last attempt, dead-lettered)",
  incremental: true
})

export const commandsRedelivered = Metric.counter("notification_commands_redelivered", {
  description: "Deliveries the broker marked as redelivered (after a retry, a crash or a lost connection)",
  incremental: true
})

export const commandsDeadLettered = Metric.counter("notification_commands_dead_lettered", {
  description: "Commands rejected to the dead-letter queue; reason: invalid (poison) or max_attempts",
  incremental: true
})

export const processingDuration = Metric.histogram(
  "notification_command_processing_seconds",
  MetricBoundaries.fromIterable([0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 0.75, 1, 2.5, 5, 10, 30]),
  "Time from receiving a delivery to deciding its settlement (decode and send)"
)

const INVALID = label("reason", "invalid")
const MAX_ATTEMPTS = label("reason", "max_attempts")
const ACK = label("outcome", "ack")
const RETRY = label("outcome", "retry")
const DEAD_LETTER = label("outcome", "dead_letter")

/**
 * Times one delivery's processing and counts its outcome: an ack is a processed command, a retry a
 * failed send, a dead-letter either a poison message (`reason="invalid"`) or a last failed send
 * (`reason="max_attempts"`, also a failed send). An interrupted delivery (shutdown mid-send) is
 * settled by nobody and not counted.
 */
export const observeDelivery = (message: amqp.Message) =>
<E, R>(process: Effect.Effect<Settlement, E, R>): Effect.Effect<Settlement, E, R> =>
  Effect.suspend(() => {
    const startedAt = performance.now()
    if (message.fields.redelivered) commandsRedelivered.unsafeUpdate(1, NO_LABELS)
    // `map`, not `onExit`: only a settlement is counted, and `onExit` costs a few µs per delivery more.
    return Effect.map(process, (settlement) => {
      switch (settlement._tag) {
        case "Ack":
          commandsProcessed.unsafeUpdate(1, NO_LABELS)
          processingDuration.unsafeUpdate(seconds(startedAt), ACK)
          break
        case "Retry":
          commandsFailed.unsafeUpdate(1, NO_LABELS)
          processingDuration.unsafeUpdate(seconds(startedAt), RETRY)
          break
        case "DeadLetter": {
          if (!settlement.poison) commandsFailed.unsafeUpdate(1, NO_LABELS)
          commandsDeadLettered.unsafeUpdate(1, settlement.poison ? INVALID : MAX_ATTEMPTS)
          processingDuration.unsafeUpdate(seconds(startedAt), DEAD_LETTER)
        }
      }
      return settlement
    })
  })

// Labelled series exist (at 0) before their first update, so a scrape shows every name at once.
for (const labels of [CONFIRMED, REFUSED]) publishDuration.unsafeValue(labels)
for (const labels of [INVALID, MAX_ATTEMPTS]) commandsDeadLettered.unsafeValue(labels)
for (const labels of [ACK, RETRY, DEAD_LETTER]) processingDuration.unsafeValue(labels)
for (const metric of [ordersAccepted, ordersRefused, commandsProcessed, commandsFailed, commandsRedelivered]) {
  metric.register()
}

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
