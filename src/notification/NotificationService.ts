import { Layer } from "effect"
import { AmqpConnection } from "../messaging/AmqpConnection"
import { CommandConsumerLive } from "./CommandConsumer"
import { NotificationSender } from "./NotificationSender"

/**
 * The whole notification service. On SIGTERM the consumer stops taking deliveries, finishes and
 * settles those in flight, and only then are its channel and the connection closed.
 */
export const NotificationServiceLive = CommandConsumerLive.pipe(
  Layer.provide(NotificationSender.Default),
  Layer.provide(AmqpConnection.layer({ connectionName: "notification-service" }))
)
