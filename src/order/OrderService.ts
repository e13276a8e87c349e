import { Effect, Layer } from "effect"
import { SharedConfig } from "../config/SharedConfig"
import { AmqpConnection } from "../messaging/AmqpConnection"
import { TracingLive } from "../observability/Tracing"
import { EventConsumerLive } from "./EventConsumer"
import { HttpLive } from "./Http"
import { IdempotencyKeyExpiryLive } from "./IdempotencyKeyExpiry"
import { Orders } from "./Orders"
import { OutboxRelayLive } from "./OutboxRelay"
import { OrderConfig } from "./OrderConfig"
import { DatabaseConfig, DatabaseLive } from "./store/Database"
import { OrderStore } from "./store/OrderStore"

/**
 * The whole order service. Infrastructure is provided outermost, so on SIGTERM the HTTP server
 * closes first (in-flight requests finish, their orders committed), then the event consumer
 * drains, then the relay and its channel, the connection, and last the store.
 */
const services = HttpLive.pipe(
  Layer.provide(Orders.Default),
  Layer.provide([EventConsumerLive, IdempotencyKeyExpiryLive]),
  Layer.provide(OutboxRelayLive),
  Layer.provide(OrderStore.Default),
  Layer.provide(AmqpConnection.layer({ connectionName: "order-service" })),
  Layer.provide(DatabaseLive),
  Layer.provide(TracingLive("order-service"))
)

/** Every configuration value is checked before anything is opened: a bad one stops the service alone. */
export const OrderServiceLive = Layer.unwrapEffect(
  Effect.as(Effect.all([SharedConfig, OrderConfig, DatabaseConfig]), services)
)
