import { Layer } from "effect"
import { AmqpConnection } from "../messaging/AmqpConnection"
import { TracingLive } from "../observability/Tracing"
import { CommandConsumerLive } from "./CommandConsumer"
import { EventPublisher } from "./EventPublisher"
import { HttpLive } from "./Http"
import { NotificationSender } from "./NotificationSender"

/**
 * The whole notification service. On SIGTERM the health server closes, then the consumer stops
 * taking deliveries and finishes and settles those in flight (each after its event is confirmed),
 * and only then are its channels and the connection closed.
 */
export const NotificationServiceLive = HttpLive.pipe(
  Layer.provide(CommandConsumerLive),
  Layer.provide([NotificationSender.Default, EventPublisher.Live]),
  Layer.provide(AmqpConnection.layer({ connectionName: "notification-service" })),
  Layer.provide(TracingLive("notification-service"))
)
