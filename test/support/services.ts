import { NodeHttpServer } from "@effect/platform-node"
import { Layer } from "effect"
import { AmqpConnection } from "../../src/messaging/AmqpConnection"
import { CommandConsumerLive } from "../../src/notification/CommandConsumer"
import { NotificationSender } from "../../src/notification/NotificationSender"
import { CommandPublisherLive } from "../../src/order/CommandPublisher"
import { HttpRoutes } from "../../src/order/Http"
import { Orders } from "../../src/order/Orders"
import { testConfig } from "./broker"

/**
 * The order service in-process: its real Layers against the real broker, served by a test HTTP
 * server on a random port (its `HttpClient` is provided too, pointed at it).
 */
export const orderService = (env: Record<string, string | number>) =>
  HttpRoutes.pipe(
    Layer.provide(Orders.Default),
    Layer.provide(CommandPublisherLive),
    Layer.provideMerge(AmqpConnection.layer({ connectionName: "test-order-service" })),
    Layer.provideMerge(NodeHttpServer.layerTest),
    Layer.provide(testConfig(env))
  )

/** The notification consumer in-process, with the real sender or a double. */
export const notificationConsumer = (
  env: Record<string, string | number>,
  sender: Layer.Layer<NotificationSender, unknown> = NotificationSender.Default
) =>
  CommandConsumerLive.pipe(
    Layer.provide(sender),
    Layer.provide(AmqpConnection.layer({ connectionName: "test-notification-service" })),
    Layer.provide(testConfig(env))
  )
