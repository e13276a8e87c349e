import { Command } from "@effect/cli"
import { Console, Effect } from "effect"
import { SharedConfig } from "../config/SharedConfig"
import { closeQuietly, connectOnce, openChannel } from "../messaging/AmqpConnection"
import { declareAll, describeDeclaration } from "../messaging/QueueTopology"
import { commandQueueTopology } from "../notification/CommandConsumer"
import { NotificationConfig } from "../notification/NotificationConfig"
import { eventsQueueTopology } from "../order/EventConsumer"
import { OrderConfig } from "../order/OrderConfig"

/**
 * Everything the two services declare, for the configuration they run with (COMMAND_QUEUE,
 * ORDER_EVENTS_QUEUE and the retry settings, which name the delay queues).
 */
const servicesTopology = Effect.gen(function*() {
  const { commandQueue } = yield* SharedConfig
  const { retryPolicy } = yield* NotificationConfig
  const { eventsQueue } = yield* OrderConfig
  return [...commandQueueTopology(commandQueue, retryPolicy), ...eventsQueueTopology(eventsQueue)]
})

const declareServicesTopology = Effect.scoped(Effect.gen(function*() {
  const topology = yield* servicesTopology
  const connection = yield* connectOnce("topology-setup")
  const channel = yield* Effect.acquireRelease(openChannel(connection, () => connection.createChannel()), closeQuietly)
  channel.on("error", () => undefined)
  yield* declareAll(channel, topology)
  yield* Console.log(topology.map((declaration) => `Declared ${describeDeclaration(declaration)}`).join("\n"))
}))

export const topologyCommand = Command.make("topology", {}, () => declareServicesTopology).pipe(Command.withDescription(
  "Declare the queues, exchange and binding both services use, on the broker at AMQP_URL, as the services would " +
    "with the same COMMAND_QUEUE, ORDER_EVENTS_QUEUE and NOTIFICATION_RETRY_*/NOTIFICATION_MAX_ATTEMPTS; idempotent. " +
    "For deployments whose service users may not configure anything: run it once as a user that may, before the " +
    "services start and after changing any of those settings. Exit code 0: done; 1: broker, permission or configuration trouble."
))
