import { NodeHttpServer } from "@effect/platform-node"
import { HttpClient } from "@effect/platform"
import { Effect, Layer, Schedule } from "effect"
import { mkdtemp, rm } from "node:fs/promises"
import { tmpdir } from "node:os"
import { join } from "node:path"
import { AmqpConnection } from "../../src/messaging/AmqpConnection"
import { CommandConsumerLive } from "../../src/notification/CommandConsumer"
import { EventPublisher } from "../../src/notification/EventPublisher"
import { NotificationSender } from "../../src/notification/NotificationSender"
import { EventConsumerLive } from "../../src/order/EventConsumer"
import { HttpRoutes } from "../../src/order/Http"
import { Orders } from "../../src/order/Orders"
import { OutboxRelayLive } from "../../src/order/OutboxRelay"
import { DatabaseLive } from "../../src/order/store/Database"
import { OrderStore } from "../../src/order/store/OrderStore"
import { testConfig } from "./broker"

/** A folder of the test's own under the system's temporary folder, removed with the scope. */
export const temporaryFolder = Effect.acquireRelease(
  Effect.promise(() => mkdtemp(join(tmpdir(), "orders-test-"))),
  (folder) => Effect.promise(() => rm(folder, { recursive: true, force: true }))
)

/** The events queue a test's order service reads: beside its command queue, deleted with it (see `testBroker`). */
export const eventsQueueOf = (commandQueue: string) => `${commandQueue}.events`

/**
 * The order service in-process: its real Layers against the real broker and a store of its own (a
 * fresh SQLite file unless `DATABASE_URL` is given), served by a test HTTP server on a random port
 * (its `HttpClient` is provided too, pointed at it).
 */
export const orderService = (env: Record<string, string | number>) =>
  Layer.unwrapScoped(
    Effect.map(temporaryFolder, (folder) =>
      HttpRoutes.pipe(
        Layer.provide(Orders.Default),
        Layer.provide([EventConsumerLive, OutboxRelayLive]),
        Layer.provideMerge(OrderStore.Default),
        Layer.provideMerge(AmqpConnection.layer({ connectionName: "test-order-service" })),
        Layer.provideMerge(NodeHttpServer.layerTest),
        Layer.provide(DatabaseLive),
        Layer.provide(testConfig({
          DATABASE_URL: join(folder, "orders.db"),
          ORDER_EVENTS_QUEUE: eventsQueueOf(String(env["COMMAND_QUEUE"] ?? "send_notification_command")),
          ...env
        }))
      ))
  )

/** The notification consumer in-process, with the real sender or a double. */
export const notificationConsumer = (
  env: Record<string, string | number>,
  sender: Layer.Layer<NotificationSender, unknown> = NotificationSender.Default
) =>
  CommandConsumerLive.pipe(
    Layer.provide([sender, EventPublisher.Live]),
    Layer.provide(AmqpConnection.layer({ connectionName: "test-notification-service" })),
    Layer.provide(testConfig(env))
  )

/** Polls an order over the `HttpClient` of `orderService` until `check` holds: the relay and the events move it on asynchronously. */
export const orderUntil = (orderId: string, check: (order: Record<string, any>) => boolean) =>
  HttpClient.get(`/orders/${orderId}`).pipe(
    Effect.flatMap((response) => Effect.map(response.json, (json) => json as Record<string, any>)),
    Effect.filterOrFail(check),
    Effect.retry(Schedule.spaced("25 millis").pipe(Schedule.upTo("20 seconds")))
  )
