import type * as amqp from "amqplib"
import { Cause, Context, Effect, Either, Exit, FiberRef, HashMap, Layer } from "effect"
import { SharedConfig } from "../config/SharedConfig"
import { NotificationFailedEvent, NotificationSentEvent } from "../contracts/NotificationEvents"
import { decodeCommand } from "../contracts/SendNotificationCommand"
import { consumeQueue } from "../messaging/QueueConsumer"
import { declareWorkQueue } from "../messaging/QueueTopology"
import { deliveryAttempt, Settlement } from "../messaging/Settlement"
import { tracingEnabled, withConsumeSpan } from "../observability/TraceContext"
import { describeCause } from "../runtime/describe"
import { EventPublisher } from "./EventPublisher"
import { NotificationConfig } from "./NotificationConfig"
import { observeDelivery } from "./NotificationMetrics"
import { NotificationSender } from "./NotificationSender"

/**
 * Decides what becomes of one delivery: a message that is not a valid command is dead-lettered at
 * once (it would fail the same way forever); a failed send is retried until the last attempt.
 * Before a command is settled, its event goes back (`NotificationSent`, or `NotificationFailed`
 * for the last failed attempt), confirmed by the broker, so no settled command loses its event.
 *
 * Each delivery runs in a fiber of its own, so once it is known to carry a command, the rest of
 * that fiber's log lines (the send's own, and its settlement's) are annotated with the order id.
 */
export const processDelivery = (
  message: amqp.Message,
  maxAttempts: number
): Effect.Effect<Settlement, never, NotificationSender | EventPublisher> => {
  const decoded = decodeCommand(message.content)
  if (Either.isLeft(decoded)) {
    return Effect.succeed(Settlement.DeadLetter({ reason: `not a valid SendNotificationCommand (${decoded.left})`, poison: true }))
  }
  const command = decoded.right
  const attempt = deliveryAttempt(message)
  return annotateFiberLogs("orderId", command.orderId).pipe(
    Effect.zipRight(NotificationSender),
    Effect.flatMap((sender) => Effect.exit(sender.send(command))),
    Effect.flatMap((sent): Effect.Effect<Settlement, never, EventPublisher> => {
      const { orderId, userId } = command
      if (Exit.isSuccess(sent)) {
        return publishEvent(new NotificationSentEvent({ orderId, userId, sentAt: new Date() }, true), ACK)
      }
      // Shutdown ran out of time mid-send: settle nothing, the broker redelivers.
      if (Cause.isInterruptedOnly(sent.cause)) return Effect.interrupt
      const reason = describeCause(sent.cause)
      if (attempt < maxAttempts) {
        return Effect.succeed(Settlement.Retry({ reason: `${reason} (attempt ${attempt} of ${maxAttempts})` }))
      }
      const failed = new NotificationFailedEvent({ orderId, userId, reason, attempts: attempt, failedAt: new Date() }, true)
      return publishEvent(failed, Settlement.DeadLetter({ reason: `${reason}; gave up after ${attempt} attempts`, poison: false }))
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
    case "DeadLetter":
      return settlement.poison
        // Not a command, so there is no order to name; the message's own id is what there is.
        ? Effect.logError(`Dead-lettered: ${settlement.reason}`).pipe(
          Effect.annotateLogs("messageId", String(message.properties.messageId ?? "none"))
        )
        : Effect.logError(`Dead-lettered: ${settlement.reason}`)
  }
}

/** Consumes the command queue for the life of the service. */
export class CommandConsumer extends Context.Tag("notification/CommandConsumer")<CommandConsumer, {
  /** Whether a consumer is subscribed right now (readiness). */
  readonly isReady: Effect.Effect<boolean>
}>() {}

const make = Effect.gen(function*() {
  const { commandQueue, shutdownTimeout } = yield* SharedConfig
  const { maxAttempts, prefetch } = yield* NotificationConfig
  const tracing = yield* tracingEnabled

  const handle = (message: amqp.Message) => {
    const processed = processDelivery(message, maxAttempts).pipe(observeDelivery(message))
    // Continues the publisher's trace from the message headers.
    return tracing ? withConsumeSpan(message, commandQueue, "CommandConsumer.consume")(processed) : processed
  }

  return CommandConsumer.of(
    yield* consumeQueue({
      queue: commandQueue,
      prefetch,
      declare: (channel) => declareWorkQueue(channel, commandQueue),
      handle,
      settled: logSettled,
      shutdownTimeout
    })
  )
})

export const CommandConsumerLive = Layer.scoped(CommandConsumer, make)
