import type * as amqp from "amqplib"
import { Cause, Clock, Context, Duration, Effect, Either, Exit, FiberRef, HashMap, Layer } from "effect"
import { SharedConfig } from "../config/SharedConfig"
import { NotificationFailedEvent, NotificationSentEvent } from "../contracts/NotificationEvents"
import { decodeCommand } from "../contracts/SendNotificationCommand"
import { decideRetry, retryQueueTopology, type RetryPolicy } from "../messaging/DelayedRetry"
import { consumeQueue } from "../messaging/QueueConsumer"
import { type Declaration, workQueueTopology } from "../messaging/QueueTopology"
import { deliveryAttempt, Settlement } from "../messaging/Settlement"
import { tracingEnabled, withConsumeSpan } from "../observability/TraceContext"
import { describeCause, oneLineReason } from "../runtime/describe"
import { EventPublisher } from "./EventPublisher"
import { NotificationConfig } from "./NotificationConfig"
import { observeDelivery } from "./NotificationMetrics"
import { NotificationSender } from "./NotificationSender"

/**
 * Decides what becomes of one delivery: a message that is not a valid command is dead-lettered at
 * once (it would fail the same way forever); a failed send is retried as `policy` says, at once
 * or after a wait in a delay queue, until its last attempt. Before a command is settled, its event
 * goes back (`NotificationSent`, or `NotificationFailed` for the last failed attempt), confirmed by
 * the broker, so no settled command loses its event.
 *
 * Each delivery runs in a fiber of its own, so once it is known to carry a command, the rest of
 * that fiber's log lines (the send's own, and its settlement's) are annotated with the order id.
 */
export const processDelivery = (
  message: amqp.Message,
  policy: RetryPolicy
): Effect.Effect<Settlement, never, NotificationSender | EventPublisher> => {
  const attempt = deliveryAttempt(message)
  const decoded = decodeCommand(message.content)
  if (Either.isLeft(decoded)) {
    return Effect.succeed(Settlement.DeadLetter({
      reason: `not a valid SendNotificationCommand (${decoded.left})`,
      poison: true,
      attempts: attempt
    }))
  }
  const command = decoded.right
  return annotateFiberLogs("orderId", command.orderId).pipe(
    Effect.zipRight(NotificationSender),
    Effect.flatMap((sender) => Effect.exit(sender.send(command))),
    Effect.flatMap((sent): Effect.Effect<Settlement, never, EventPublisher> => {
      const { orderId, userId } = command
      if (Exit.isSuccess(sent)) {
        return Effect.flatMap(Clock.currentTimeMillis, (now) =>
          publishEvent(new NotificationSentEvent({ orderId, userId, sentAt: new Date(now) }, true), ACK))
      }
      // Shutdown ran out of time mid-send: settle nothing, the broker redelivers.
      if (Cause.isInterruptedOnly(sent.cause)) return Effect.interrupt
      const reason = oneLineReason(describeCause(sent.cause))
      return Effect.flatMap(decideRetry(policy, attempt), (decision) => {
        switch (decision._tag) {
          case "RetryNow":
            return Effect.succeed(Settlement.Retry({ reason: `${reason} (attempt ${attempt} of ${policy.maxAttempts})` }))
          case "RetryLater":
            return Effect.succeed(Settlement.RetryLater({ reason, attempts: attempt, ...decision }))
          case "GiveUp":
            return Effect.flatMap(Clock.currentTimeMillis, (now) =>
              publishEvent(
                new NotificationFailedEvent({ orderId, userId, reason, attempts: attempt, failedAt: new Date(now) }, true),
                Settlement.DeadLetter({ reason, poison: false, attempts: attempt })
              ))
        }
      })
    })
  )
}

const ACK = Settlement.Ack()

const publishEvent = (event: NotificationSentEvent | NotificationFailedEvent, then: Settlement) =>
  Effect.flatMap(EventPublisher, (events) => Effect.as(events.publish(event), then))

/**
 * Annotates every later log line of the current fiber. Not `Effect.annotateLogs`, which sets and
 * restores the annotation around an effect: a delivery's fiber ends with it, so nothing needs
 * restoring, and the one update is cheaper (see docs/performance.md).
 */
const annotateFiberLogs = (key: string, value: string) =>
  FiberRef.update(FiberRef.currentLogAnnotations, HashMap.set<string, unknown>(key, value))

/** The log line for each settlement; the fault-injection suite counts "Notification sent" lines. */
const logSettled = (message: amqp.Message, settlement: Settlement) => {
  switch (settlement._tag) {
    case "Ack":
      return Effect.logDebug(`Notification sent for order ${String(message.properties.messageId ?? "unknown")}`)
    case "Retry":
      return Effect.logWarning(`Send failed, requeued: ${settlement.reason}`)
    case "RetryLater":
      return Effect.logWarning(
        `Send failed, retrying in ${Duration.format(settlement.waitMillis)}: ${settlement.reason} (attempt ${settlement.attempts})`
      )
    case "DeadLetter":
      return settlement.poison
        // Not a command, so there is no order to name; the message's own id is what there is.
        ? Effect.logError(`Dead-lettered: ${settlement.reason}`).pipe(
          Effect.annotateLogs("messageId", String(message.properties.messageId ?? "none"))
        )
        : Effect.logError(`Dead-lettered: ${settlement.reason}; gave up after ${settlement.attempts} attempts`)
  }
}

/** The command queue with its dead-letter queue, and the delay queues `policy` uses. */
export const commandQueueTopology = (queue: string, policy: RetryPolicy): ReadonlyArray<Declaration> => [
  ...workQueueTopology(queue),
  ...retryQueueTopology(queue, policy)
]

/** Consumes the command queue for the life of the service. */
export class CommandConsumer extends Context.Tag("notification/CommandConsumer")<CommandConsumer, {
  /** Whether a consumer is subscribed right now (readiness). */
  readonly isReady: Effect.Effect<boolean>
}>() {}

const make = Effect.gen(function*() {
  const { commandQueue, publishTimeout, shutdownTimeout } = yield* SharedConfig
  const { prefetch, retryPolicy } = yield* NotificationConfig
  const tracing = yield* tracingEnabled

  const handle = (message: amqp.Message) => {
    const processed = processDelivery(message, retryPolicy).pipe(observeDelivery(message))
    // Continues the publisher's trace from the message headers.
    return tracing ? withConsumeSpan(message, commandQueue, "CommandConsumer.consume")(processed) : processed
  }

  return CommandConsumer.of(
    yield* consumeQueue({
      queue: commandQueue,
      prefetch,
      topology: commandQueueTopology(commandQueue, retryPolicy),
      handle,
      settled: logSettled,
      shutdownTimeout,
      publishTimeout
    })
  )
})

export const CommandConsumerLive = Layer.scoped(CommandConsumer, make)
