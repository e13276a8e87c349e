import type * as amqp from "amqplib"
import { Cause, Context, Deferred, Effect, Either, Exit, FiberSet, Layer, Ref } from "effect"
import { SharedConfig } from "../config/SharedConfig"
import { AmqpConnection, closeQuietly, openChannel } from "../messaging/AmqpConnection"
import { declareCommandTopology } from "../messaging/CommandTopology"
import { decodeCommand } from "../messaging/SendNotificationCommand"
import { observeDelivery } from "../observability/Metrics"
import { withConsumeSpan } from "../observability/TraceContext"
import { atMost } from "../runtime/atMost"
import { describeCause } from "../runtime/describe"
import { type AckCoalescer, makeAckCoalescer } from "./AckCoalescer"
import { NotificationConfig } from "./NotificationConfig"
import { NotificationSender } from "./NotificationSender"
import { deliveryAttempt, Settlement } from "./Settlement"

/**
 * Decides what becomes of one delivery: a message that is not a valid command is dead-lettered at
 * once (it would fail the same way forever); a failed send is retried until the last attempt.
 */
export const processDelivery = (message: amqp.Message, maxAttempts: number) =>
  Effect.gen(function*() {
    const decoded = decodeCommand(message.content)
    if (Either.isLeft(decoded)) {
      return Settlement.DeadLetter({ reason: `not a valid SendNotificationCommand (${decoded.left})`, poison: true })
    }
    const sender = yield* NotificationSender
    const attempt = deliveryAttempt(message)
    const sent = yield* Effect.exit(sender.send(decoded.right))
    if (Exit.isSuccess(sent)) return Settlement.Ack()
    // Shutdown ran out of time mid-send: settle nothing, the broker redelivers.
    if (Cause.isInterruptedOnly(sent.cause)) return yield* Effect.interrupt
    const reason = describeCause(sent.cause)
    return attempt >= maxAttempts
      ? Settlement.DeadLetter({ reason: `${reason}; gave up after ${attempt} attempts`, poison: false })
      : Settlement.Retry({ reason: `${reason} (attempt ${attempt} of ${maxAttempts})` })
  })

/**
 * The log annotation for lines about a delivery: its order, whose id the publisher puts in
 * `messageId`, or for a message that is not a command (poison) just its `messageId`.
 */
const deliveryAnnotation = (message: amqp.Message, settlement?: Settlement) =>
  Effect.annotateLogs(
    settlement?._tag === "DeadLetter" && settlement.poison ? "messageId" : "orderId",
    String(message.properties.messageId ?? "none")
  )

/**
 * Applies a settlement on the channel that delivered the message, never on another: a delivery tag
 * means nothing to a newer channel (the broker would close it with 406). If that channel has died,
 * the broker has already put the message back, and will deliver it again.
 */
const settle = (channel: amqp.Channel, acks: AckCoalescer, message: amqp.Message, settlement: Settlement) =>
  Effect.suspend(() => {
    try {
      Settlement.$match(settlement, {
        Ack: () => acks.ack(message),
        Retry: () => (acks.forget(message), channel.reject(message, true)),
        DeadLetter: () => (acks.forget(message), channel.reject(message, false))
      })
    } catch {
      return Effect.logWarning("The channel closed before this delivery was settled; the broker will redeliver it")
    }
    return Settlement.$match(settlement, {
      // The one sign that a command was processed; the fault-injection suite counts these.
      Ack: () => Effect.logDebug(`Notification sent for order ${String(message.properties.messageId ?? "unknown")}`),
      Retry: ({ reason }) => Effect.logWarning(`Send failed, requeued: ${reason}`),
      DeadLetter: ({ reason }) => Effect.logError(`Dead-lettered: ${reason}`)
    })
  }).pipe(deliveryAnnotation(message, settlement))

/** Consumes the command queue for the life of the service. */
export class CommandConsumer extends Context.Tag("notification/CommandConsumer")<CommandConsumer, {
  /** Whether a consumer is subscribed right now (readiness). */
  readonly isReady: Effect.Effect<boolean>
}>() {}

const make = Effect.gen(function*() {
  const connection = yield* AmqpConnection
  const subscribed = yield* Ref.make(false)
  const { commandQueue, shutdownTimeout } = yield* SharedConfig
  const { maxAttempts, prefetch } = yield* NotificationConfig
  const sender = yield* NotificationSender

  const handle = (channel: amqp.Channel, acks: AckCoalescer, message: amqp.Message) =>
    processDelivery(message, maxAttempts).pipe(
      // The send's own lines ("Sending notification for order ...") carry the order id too.
      deliveryAnnotation(message),
      observeDelivery(message),
      Effect.flatMap((settlement) => settle(channel, acks, message, settlement)),
      // Continues the publisher's trace from the message headers.
      withConsumeSpan(message, commandQueue),
      Effect.provideService(NotificationSender, sender)
    )

  // One channel and one consumer per connection, until either closes.
  const consumeSession = (model: amqp.ChannelModel) =>
    Effect.gen(function*() {
      const channel = yield* Effect.acquireRelease(openChannel(model, () => model.createChannel()), closeQuietly)
      const ended = yield* Deferred.make<void>()
      let channelClosed = false
      channel.on("error", () => undefined)
      channel.on("close", () => {
        channelClosed = true
        Deferred.unsafeDone(ended, Exit.void)
      })
      const acks = makeAckCoalescer(channel)
      yield* declareCommandTopology(channel, commandQueue)
      yield* Effect.tryPromise(() => channel.prefetch(prefetch))

      // Released before the consumer below: in-flight sends are interrupted only after the drain.
      const inFlight = yield* FiberSet.make<void>()
      const run = yield* FiberSet.runtime(inFlight)<never>()
      yield* Effect.acquireRelease(
        Effect.tryPromise(() =>
          channel.consume(commandQueue, (message) => {
            // null: the broker cancelled the consumer (queue deleted); start a new session.
            if (message === null) Deferred.unsafeDone(ended, Exit.void)
            else {
              acks.received(message)
              run(handle(channel, acks, message))
            }
          })
        ),
        ({ consumerTag }) =>
          // On a channel that died, nothing in flight can be settled any more: the broker redelivers
          // it, so the sends are interrupted at once (by the FiberSet) and the next session starts.
          channelClosed ? Effect.void : FiberSet.size(inFlight).pipe(
            // Shutdown, or the broker cancelled us: stop deliveries, then let those in flight finish
            // and settle, within the shutdown budget.
            Effect.flatMap((count) => Effect.logInfo(`Stopped consuming ${commandQueue}; finishing ${count} in flight`)),
            Effect.zipRight(Effect.promise(() => channel.cancel(consumerTag).catch(() => undefined))),
            Effect.zipRight(FiberSet.awaitEmpty(inFlight)),
            atMost(shutdownTimeout),
            // The last acks may still wait for the end of the turn; they must go before the channel closes.
            Effect.zipRight(Effect.sync(acks.flush))
          )
      )
      yield* Effect.acquireRelease(Ref.set(subscribed, true), () => Ref.set(subscribed, false))
      yield* Effect.logInfo(`Consuming ${commandQueue} with prefetch ${prefetch}`)
      yield* Deferred.await(ended)
    })

  yield* Effect.forkScoped(connection.withEveryConnection(consumeSession))
  return CommandConsumer.of({ isReady: Ref.get(subscribed) })
})

export const CommandConsumerLive = Layer.scoped(CommandConsumer, make)
