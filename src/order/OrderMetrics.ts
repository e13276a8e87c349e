import { Metric, MetricBoundaries } from "effect"
import { label, NO_LABELS } from "../observability/Metrics"

/** The order service's metrics; every name starts with `order` (see `MetricsRoute`). */

export const ordersAccepted = Metric.counter("orders_accepted", {
  description: "Orders answered 201 for the first time: the order and its command were committed to the store",
  incremental: true
})

export const ordersReplayed = Metric.counter("orders_replayed", {
  description: "POST /orders answered again from an earlier request with the same Idempotency-Key",
  incremental: true
})

export const ordersRefused = Metric.counter("orders_refused", {
  description: "Orders answered 503 with nothing stored; reason: store (unreachable or failing) or outbox_full",
  incremental: true
})

export const outboxPending = Metric.gauge("order_outbox_pending", {
  description: "Commands stored but not yet confirmed by the broker (every replica's, as last counted)"
})

export const outboxOldestSeconds = Metric.gauge("order_outbox_oldest_seconds", {
  description: "Age of the oldest command still in the outbox, 0 when it is empty"
})

export const relayPublished = Metric.counter("order_relay_published", {
  description: "Commands the outbox relay published and the broker confirmed",
  incremental: true
})

export const relayFailed = Metric.counter("order_relay_failed", {
  description: "Relay publishes the broker did not confirm (each stays in the outbox and is tried again)",
  incremental: true
})

export const outboxLag = Metric.histogram(
  "order_outbox_lag_seconds",
  MetricBoundaries.fromIterable([0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60]),
  "Time from an order's commit to the broker's confirm of its command"
)

export const statusTransitions = Metric.counter("order_status_transitions", {
  description: "Orders whose status moved forward; to: queued, notified or failed",
  incremental: true
})

export const eventsConsumed = Metric.counter("order_events_consumed", {
  description: "Notification events received; outcome: applied, duplicate, unknown_order or invalid",
  incremental: true
})

export const REFUSED_STORE = label("reason", "store")
export const REFUSED_OUTBOX_FULL = label("reason", "outbox_full")
export const TO_QUEUED = label("to", "queued")
export const TO_NOTIFIED = label("to", "notified")
export const TO_FAILED = label("to", "failed")
export const EVENT_OUTCOMES = {
  applied: label("outcome", "applied"),
  duplicate: label("outcome", "duplicate"),
  unknownOrder: label("outcome", "unknown_order"),
  invalid: label("outcome", "invalid")
} as const

// Labelled series exist (at 0) before their first update, so a scrape shows every name at once.
for (const labels of [REFUSED_STORE, REFUSED_OUTBOX_FULL]) ordersRefused.unsafeValue(labels)
for (const labels of [TO_QUEUED, TO_NOTIFIED, TO_FAILED]) statusTransitions.unsafeValue(labels)
for (const labels of Object.values(EVENT_OUTCOMES)) eventsConsumed.unsafeValue(labels)
for (const metric of [ordersAccepted, ordersReplayed, relayPublished, relayFailed]) metric.register()
outboxPending.unsafeUpdate(0, NO_LABELS)
outboxOldestSeconds.unsafeUpdate(0, NO_LABELS)
outboxLag.register()
