import type * as amqp from "amqplib"
import { Context, Deferred, Duration, Effect, Layer } from "effect"
import { SharedConfig } from "../config/SharedConfig"
import { AmqpConnection, closeQuietly, openChannel } from "../messaging/AmqpConnection"
import { declareCommandTopology } from "../messaging/CommandTopology"
import { currentTraceHeaders, tracingEnabled } from "../observability/TraceContext"
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
  // The open confirm channel, if any. A plain variable, not a `Ref`: every publish reads it
  // synchronously, and only the session below writes it.
  let session: ConfirmSession | undefined
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
        (channel) => Effect.zipRight(Effect.sync(() => (session = undefined)), closeQuietly(channel))
      )
      const closed = yield* Deferred.make<void>()
      channel.on("error", () => undefined)
      channel.on("close", () => Deferred.unsafeDone(closed, Effect.void))
      const returned = new Set<string>()
      channel.on("return", (message: amqp.Message) => returned.add(String(message.properties.messageId)))
      yield* declareCommandTopology(channel, commandQueue)
      session = { channel, returned }
      yield* Deferred.await(closed)
      session = undefined
    })

  yield* Effect.forkScoped(connection.withEveryConnection(confirmChannelSession))

  const refuse = (message: string) => Effect.fail(new BrokerUnavailable({ message }))

  /**
   * Publishes and resumes on the broker's confirm (or return, nack, lost channel, deadline). One
   * `Effect.async`, no `Effect.gen` and no `Ref`s around it: this runs once per order, and each of
   * those layers cost whole microseconds a request under the benchmark.
   */
  const publishConfirmed = (command: SendNotificationCommand, traceHeaders?: Record<string, string>) =>
    Effect.async<void, BrokerUnavailable>((resume) => {
      if (session === undefined) {
        return resume(refuse("No confirm channel to the broker (not connected, or the queue could not be declared)"))
      }
      const blockedBy = connection.blockedBy()
      if (blockedBy !== undefined) return resume(refuse(`The broker is refusing publishes (${blockedBy})`))
      const { channel, returned } = session
      const messageId: string = command.orderId
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
      // No canceler: an interrupted publish (the client went away) leaves its deadline to fire
      // into a fiber that has ended, which ignores it. A canceler would wrap every publish in an
      // uninterruptible region, for the rare abort.
    })

  /** With tracing on: a producer span, whose context travels in the message for the consumer. */
  const publishTraced = (command: SendNotificationCommand) =>
    currentTraceHeaders.pipe(
      Effect.flatMap((traceHeaders) => publishConfirmed(command, traceHeaders)),
      Effect.withSpan("CommandPublisher.publish", {
        kind: "producer",
        // A stack trace per publish (an Error allocated even with tracing off) would tell us nothing.
        captureStackTrace: false,
        attributes: {
          "messaging.system": "rabbitmq",
          "messaging.operation.type": "send",
          "messaging.destination.name": commandQueue,
          "messaging.message.id": command.orderId
        }
      })
    )

  const tracing = yield* tracingEnabled

  return CommandPublisher.of({
    publish: tracing ? publishTraced : publishConfirmed,
    isReady: Effect.sync(() => session !== undefined)
  })
})

export const CommandPublisherLive = Layer.scoped(CommandPublisher, make)
