import { Context, Effect, Layer } from "effect"
import { encodeEvent, EVENTS_EXCHANGE, type NotificationEvent } from "../contracts/NotificationEvents"
import { makeConfirmedPublisher } from "../messaging/ConfirmedPublisher"
import { Declaration } from "../messaging/QueueTopology"
import { currentTraceHeaders, tracingEnabled } from "../observability/TraceContext"
import { SharedConfig } from "../config/SharedConfig"
import { backoff } from "../runtime/backoff"
import { countEventPublished } from "./NotificationMetrics"

/** While the broker is away, an event is tried again at this pace, until the delivery is interrupted. */
const republishSchedule = backoff("2 seconds")

/**
 * Tells whoever listens what became of a command: `NotificationSent` or `NotificationFailed` on
 * the `notification.events` exchange. `publish` ends only once the broker has confirmed the event,
 * so the consumer settles a command only after its event is safe. An event that no queue is bound
 * for (no order service has ever declared its queue) is dropped with a warning: waiting would hold
 * the command forever for a listener that may never come.
 */
export class EventPublisher extends Context.Tag("notification/EventPublisher")<EventPublisher, {
  readonly publish: (event: NotificationEvent) => Effect.Effect<void>
  readonly isReady: Effect.Effect<boolean>
}>() {
  static readonly Live = Layer.scoped(
    EventPublisher,
    Effect.gen(function*() {
      const { publishTimeout } = yield* SharedConfig
      const tracing = yield* tracingEnabled
      const publisher = yield* makeConfirmedPublisher({
        topology: [Declaration.Exchange({ name: EVENTS_EXCHANGE })],
        confirmTimeout: publishTimeout
      })
      const publish = (event: NotificationEvent) =>
        Effect.flatMap(currentTraceHeaders, (headers) => {
          const { content, options, routingKey } = encodeEvent(event, headers)
          return publisher.publish(EVENTS_EXCHANGE, routingKey, content, options).pipe(
            Effect.tap(() => countEventPublished(options.type)),
            Effect.catchIf(
              (error) => error.reason === "unroutable",
              () => Effect.logWarning(`No queue is bound for ${options.type} events; dropped the event`)
            ),
            Effect.tapError((error) => Effect.logWarning(`Could not publish ${options.type}: ${error.message}; retrying`)),
            Effect.retry(republishSchedule),
            // The schedule never ends: only an interruption (shutdown) stops the retries.
            Effect.orDie
          )
        })
      const publishTraced = (event: NotificationEvent) =>
        publish(event).pipe(Effect.withSpan("EventPublisher.publish", {
          kind: "producer",
          captureStackTrace: false,
          attributes: { "messaging.system": "rabbitmq", "messaging.destination.name": EVENTS_EXCHANGE, orderId: event.orderId }
        }))
      return { publish: tracing ? publishTraced : publish, isReady: publisher.isReady }
    })
  )
}
