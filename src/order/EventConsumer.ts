import type * as amqp from "amqplib"
import { Context, Effect, Either, Layer } from "effect"
import { SharedConfig } from "../config/SharedConfig"
import { decodeEvent, EVENTS_EXCHANGE, NotificationSentEvent, type ReceivedEvent } from "../contracts/NotificationEvents"
import { consumeQueue } from "../messaging/QueueConsumer"
import { Declaration, workQueueTopology } from "../messaging/QueueTopology"
import { deliveryAttempt, Settlement } from "../messaging/Settlement"
import { tracingEnabled, withConsumeSpan } from "../observability/TraceContext"
import { backoff } from "../runtime/backoff"
import { OrderConfig } from "./OrderConfig"
import { EVENT_OUTCOMES, eventsConsumed, TO_FAILED, TO_NOTIFIED, statusTransitions } from "./OrderMetrics"
import { abandonAfter, OrderStore, STORE_CALL_TIMEOUT } from "./store/OrderStore"

/** Events applied at once: each is one short store transaction. */
const EVENTS_PREFETCH = 50

/**
 * The exchange, the order service's own events queue (`ORDER_EVENTS_QUEUE`) with its dead-letter
 * queue, and the binding to every `notification.*` event.
 */
export const eventsQueueTopology = (queue: string): ReadonlyArray<Declaration> => [
  Declaration.Exchange({ name: EVENTS_EXCHANGE }),
  ...workQueueTopology(queue),
  Declaration.Binding({ queue, exchange: EVENTS_EXCHANGE, pattern: "notification.*" })
]

/** While the store is failing, an event is applied again at this pace (it stays unsettled meanwhile). */
const storeRetry = backoff("5 seconds")

/**
 * Moves orders forward as the notification service reports on them. Applying an event is
 * idempotent in the store (a duplicate or late event changes nothing), so every event that decodes
 * is acked once applied; an event for an order this store does not know is logged and acked; one
 * that does not decode is dead-lettered at once, since it would fail the same way forever.
 */
export class EventConsumer extends Context.Tag("order/EventConsumer")<EventConsumer, {
  readonly isReady: Effect.Effect<boolean>
}>() {}

const make = Effect.gen(function*() {
  const store = yield* OrderStore
  const { publishTimeout, shutdownTimeout } = yield* SharedConfig
  const { eventsQueue } = yield* OrderConfig
  const tracing = yield* tracingEnabled

  const apply = ({ event, eventId }: ReceivedEvent) =>
    (event instanceof NotificationSentEvent
      ? store.applyNotificationSent({ eventId, orderId: event.orderId, sentAt: event.sentAt })
      : store.applyNotificationFailed({
        eventId,
        orderId: event.orderId,
        reason: event.reason,
        attempts: event.attempts,
        failedAt: event.failedAt
      })).pipe(
        abandonAfter(STORE_CALL_TIMEOUT),
        Effect.tapError((error) => Effect.logWarning(`Could not apply an event to the order store (${error.message}); retrying`)),
        Effect.retry(storeRetry),
        // The schedule never ends: only an interruption (shutdown) stops the retries.
        Effect.orDie
      )

  const process = (message: amqp.Message): Effect.Effect<Settlement> => {
    const decoded = decodeEvent(message)
    if (Either.isLeft(decoded)) {
      eventsConsumed.unsafeUpdate(1, EVENT_OUTCOMES.invalid)
      return Effect.succeed(Settlement.DeadLetter({ reason: decoded.left, poison: true, attempts: deliveryAttempt(message) }))
    }
    const received = decoded.right
    const type = received.event instanceof NotificationSentEvent ? "NotificationSent" : "NotificationFailed"
    return apply(received).pipe(
      Effect.tap((outcome) => {
        eventsConsumed.unsafeUpdate(1, EVENT_OUTCOMES[outcome])
        if (outcome === "applied") statusTransitions.unsafeUpdate(1, type === "NotificationSent" ? TO_NOTIFIED : TO_FAILED)
        return outcome === "unknownOrder"
          ? Effect.logWarning(`${type} for an order this store does not know; acked and ignored`)
          : Effect.logDebug(`${type} ${outcome}`)
      }),
      Effect.as(ACK),
      Effect.annotateLogs("orderId", received.event.orderId)
    )
  }

  const handle = (message: amqp.Message) =>
    tracing ? withConsumeSpan(message, eventsQueue, "EventConsumer.consume")(process(message)) : process(message)

  return EventConsumer.of(
    yield* consumeQueue({
      queue: eventsQueue,
      prefetch: EVENTS_PREFETCH,
      topology: eventsQueueTopology(eventsQueue),
      handle,
      settled: (message, settlement) =>
        settlement._tag === "DeadLetter"
          ? Effect.logError(`Dead-lettered an event: ${settlement.reason}`).pipe(
            Effect.annotateLogs("messageId", String(message.properties.messageId ?? "none"))
          )
          : Effect.void,
      shutdownTimeout,
      publishTimeout
    })
  )
})

const ACK = Settlement.Ack()

export const EventConsumerLive = Layer.scoped(EventConsumer, make)
