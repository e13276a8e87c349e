import type * as amqp from "amqplib"
import { Context, Deferred, Duration, Effect, Layer, Option, Ref } from "effect"
import { SharedConfig } from "../config/SharedConfig"
import { AmqpConnection, closeQuietly, openChannel } from "../messaging/AmqpConnection"
import { declareCommandTopology } from "../messaging/CommandTopology"
import { currentTraceHeaders } from "../observability/TraceContext"
import { commandProperties, encodeCommand, type SendNotificationCommand } from "../messaging/SendNotificationCommand"
import { BrokerUnavailable } from "./Errors"
import { OrderConfig } from "./OrderConfig"

/** Publishes commands and succeeds only once the broker has confirmed them. */
export class CommandPublisher extends Context.Tag("order/CommandPublisher")<CommandPublisher, {
  readonly publish: (command: SendNotificationCommand) => Effect.Effect<void, BrokerUnavailable>
  /** Whether a confirm channel is open right now (readiness). */
  readonly isReady: Effect.Effect<boolean>
}>() {}

const APP_ID = "order-service"

interface ConfirmSession {
  readonly channel: amqp.ConfirmChannel
  /** messageIds the broker returned as unroutable; their confirm follows the return. */
  readonly returned: Set<string>
}

const make = Effect.gen(function*() {
  const connection = yield* AmqpConnection
  const { commandQueue } = yield* SharedConfig
  const { publishTimeout } = yield* OrderConfig
  const current = yield* Ref.make(Option.none<ConfirmSession>())
  const noConfirmInTime = `no confirm came within ${Duration.format(publishTimeout)}`
  // The two refusals where the broker may still have queued the command, and says so to the client.
  const uncertainMessage = (what: string) =>
    `The command was not confirmed: ${what}. The broker may still have queued it`
  const publishTimeoutMillis = Duration.toMillis(publishTimeout)

  // One confirm channel per connection: declared topology, then open for publishing until it closes.
  const confirmChannelSession = (model: amqp.ChannelModel) =>
    Effect.gen(function*() {
      const channel = yield* Effect.acquireRelease(
        openChannel(model, () => model.createConfirmChannel()),
        (channel) => Effect.zipRight(Ref.set(current, Option.none()), closeQuietly(channel))
      )
      const closed = yield* Deferred.make<void>()
      channel.on("error", () => undefined)
      channel.on("close", () => Deferred.unsafeDone(closed, Effect.void))
      const returned = new Set<string>()
      channel.on("return", (message: amqp.Message) => returned.add(String(message.properties.messageId)))
      yield* declareCommandTopology(channel, commandQueue)
      yield* Ref.set(current, Option.some({ channel, returned }))
      yield* Deferred.await(closed)
      yield* Ref.set(current, Option.none())
    })

  yield* Effect.forkScoped(connection.withEveryConnection(confirmChannelSession))

  const refuse = (message: string) => Effect.fail(new BrokerUnavailable({ message }))

  const publish = (command: SendNotificationCommand) =>
    Effect.gen(function*() {
      const session = yield* Ref.get(current)
      if (Option.isNone(session)) return yield* refuse("No confirm channel to the broker (not connected, or the queue could not be declared)")
      const blocked = yield* Ref.get(connection.blocked)
      if (Option.isSome(blocked)) return yield* refuse(`The broker is refusing publishes (${blocked.value})`)
      const { channel, returned } = session.value
      const messageId: string = command.orderId
      // This span's context, for the consumer to continue the trace (none while tracing is off).
      const traceHeaders = yield* currentTraceHeaders
      return yield* Effect.async<void, BrokerUnavailable>((resume) => {
        // The deadline is a plain timer, not `Effect.timeoutFail`, which races two extra fibers per
        // publish; Node keeps timers of one duration in one list, so each costs O(1).
        const deadline = setTimeout(() => resume(refuse(uncertainMessage(noConfirmInTime))), publishTimeoutMillis)
        const settle = (outcome: Effect.Effect<void, BrokerUnavailable>) => {
          clearTimeout(deadline)
          resume(outcome)
        }
        try {
          channel.sendToQueue(commandQueue, encodeCommand(command), commandProperties(command, APP_ID, traceHeaders), (error) => {
            if (returned.delete(messageId)) {
              settle(refuse(`The broker could not route the command to queue "${commandQueue}"`))
            } else if (error instanceof Error && error.message === "channel closed") {
              // The publish went out, its confirm never came: the broker may or may not have it.
              settle(refuse(uncertainMessage("the connection to the broker was lost before its confirm")))
            } else if (error) {
              settle(refuse("The broker refused the command (nack)"))
            } else {
              settle(Effect.void)
            }
          })
        } catch (error) {
          // The channel closed between our check and the publish.
          settle(refuse(`Lost the broker channel (${(error as Error).message})`))
        }
        return Effect.sync(() => clearTimeout(deadline))
      })
    }).pipe(Effect.withSpan("CommandPublisher.publish", {
      kind: "producer",
      // A stack trace per publish (an Error allocated even with tracing off) would tell us nothing.
      captureStackTrace: false,
      attributes: {
        "messaging.system": "rabbitmq",
        "messaging.operation.type": "send",
        "messaging.destination.name": commandQueue,
        "messaging.message.id": command.orderId
      }
    }))

  return CommandPublisher.of({
    publish,
    isReady: Effect.map(Ref.get(current), Option.isSome)
  })
})

export const CommandPublisherLive = Layer.scoped(CommandPublisher, make)
