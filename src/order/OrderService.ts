import { Layer } from "effect"
import { AmqpConnection } from "../messaging/AmqpConnection"
import { TracingLive } from "../observability/Tracing"
import { CommandPublisherLive } from "./CommandPublisher"
import { HttpLive } from "./Http"
import { Orders } from "./Orders"

/**
 * The whole order service. Infrastructure is provided outermost, so on SIGTERM the HTTP server
 * closes first (in-flight requests finish, their publishes confirmed), then the publisher's
 * channel, then the connection.
 */
export const OrderServiceLive = HttpLive.pipe(
  Layer.provide(Orders.Default),
  Layer.provide(CommandPublisherLive),
  Layer.provide(AmqpConnection.layer({ connectionName: "order-service" })),
  Layer.provide(TracingLive("order-service"))
)
