import type * as amqp from "amqplib"
import { Effect, Metric, MetricBoundaries } from "effect"
import { readStory, REPLAYED_AT } from "../messaging/FailureStory"
import type { Settlement } from "../messaging/Settlement"
import { label, NO_LABELS, secondsSince } from "../observability/Metrics"

/** The notification service's metrics; every name starts with `notification_` (see `MetricsRoute`). */

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

export const retries = Metric.counter("notification_retries", {
  description: "Failed sends retried; delay: immediate (requeued) or the delay queue's delay, e.g. 1000ms",
  incremental: true
})

export const commandsReplayed = Metric.counter("notification_commands_replayed", {
  description: "Commands replayed from the dead-letter queue (npm run dlq -- replay), counted on their first delivery",
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
const IMMEDIATE = label("delay", "immediate")

/** One label set per delay queue, built once: a service uses a handful (see `DelayedRetry.delaysOf`). */
const delayLabels = new Map<number, ReturnType<typeof label>>()
const delayLabel = (delayMillis: number) => {
  let labels = delayLabels.get(delayMillis)
  if (labels === undefined) delayLabels.set(delayMillis, labels = label("delay", `${delayMillis}ms`))
  return labels
}
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
    else if (message.properties.headers?.[REPLAYED_AT] !== undefined && readStory(message).attempts === 0) {
      commandsReplayed.unsafeUpdate(1, NO_LABELS)
    }
    // `map`, not `onExit`: only a settlement is counted, and `onExit` costs more per delivery (docs/performance.md).
    return Effect.map(process, (settlement) => {
      switch (settlement._tag) {
        case "Ack":
          commandsProcessed.unsafeUpdate(1, NO_LABELS)
          processingDuration.unsafeUpdate(secondsSince(startedAt), ACK)
          break
        case "Retry":
          commandsFailed.unsafeUpdate(1, NO_LABELS)
          retries.unsafeUpdate(1, IMMEDIATE)
          processingDuration.unsafeUpdate(secondsSince(startedAt), RETRY)
          break
        case "RetryLater":
          commandsFailed.unsafeUpdate(1, NO_LABELS)
          retries.unsafeUpdate(1, delayLabel(settlement.delayMillis))
          processingDuration.unsafeUpdate(secondsSince(startedAt), RETRY)
          break
        case "DeadLetter": {
          if (!settlement.poison) commandsFailed.unsafeUpdate(1, NO_LABELS)
          commandsDeadLettered.unsafeUpdate(1, settlement.poison ? INVALID : MAX_ATTEMPTS)
          processingDuration.unsafeUpdate(secondsSince(startedAt), DEAD_LETTER)
        }
      }
      return settlement
    })
  })

export const eventsPublished = Metric.counter("notification_events_published", {
  description: "Events confirmed by the broker; type: NotificationSent or NotificationFailed",
  incremental: true
})

const SENT = label("type", "NotificationSent")
const FAILED = label("type", "NotificationFailed")

export const countEventPublished = (type: "NotificationSent" | "NotificationFailed") =>
  eventsPublished.unsafeUpdate(1, type === "NotificationSent" ? SENT : FAILED)

// Labelled series exist (at 0) before their first update, so a scrape shows every name at once.
for (const labels of [INVALID, MAX_ATTEMPTS]) commandsDeadLettered.unsafeValue(labels)
retries.unsafeValue(IMMEDIATE)
for (const labels of [ACK, RETRY, DEAD_LETTER]) processingDuration.unsafeValue(labels)
for (const labels of [SENT, FAILED]) eventsPublished.unsafeValue(labels)
for (const metric of [commandsProcessed, commandsFailed, commandsRedelivered, commandsReplayed]) {
  metric.register()
}

