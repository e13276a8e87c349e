import type * as amqp from "amqplib"
import { Cause, Context, Deferred, Effect, Either, Exit, FiberRef, FiberSet, HashMap, Layer, Ref } from "effect"
import { SharedConfig } from "../config/SharedConfig"
import { AmqpConnection, closeQuietly, openChannel } from "../messaging/AmqpConnection"
import { declareCommandTopology } from "../messaging/CommandTopology"
import { decodeCommand } from "../messaging/SendNotificationCommand"
import { observeDelivery } from "../observability/Metrics"
import { tracingEnabled, withConsumeSpan } from "../observability/TraceContext"
import { atMost } from "../runtime/atMost"
import { describeCause } from "../runtime/describe"
import { type AckCoalescer, makeAckCoalescer } from "./AckCoalescer"
import { NotificationConfig } from "./NotificationConfig"
import { NotificationSender } from "./NotificationSender"
import { deliveryAttempt, Settlement } from "./Settlement"

/**
 * Decides what becomes of one delivery: a message that is not a valid command is dead-lettered at
 * once (it would fail the same way forever); a failed send is retried until the last attempt.
 *
 * Each delivery runs in a fiber of its own, so once it is known to carry a command, the rest of
 * that fiber's log lines (the send's own, and its settlement's) are annotated with the order id.
 */
export const processDelivery = (message: amqp.Message, maxAttempts: number): Effect.Effect<Settlement, never, NotificationSender> => {
  const decoded = decodeCommand(message.content)
  if (Either.isLeft(decoded)) {
    return Effect.succeed(Settlement.DeadLetter({ reason: `not a valid SendNotificationCommand (${decoded.left})`, poison: true }))
  }
  const command = decoded.right
  const attempt = deliveryAttempt(message)
  return annotateFiberLogs("orderId", command.orderId).pipe(
    Effect.zipRight(NotificationSender),
    Effect.flatMap((sender) => Effect.exit(sender.send(command))),
    Effect.flatMap((sent): Effect.Effect<Settlement> => {
      if (Exit.isSuccess(sent)) return ACK
      // Shutdown ran out of time mid-send: settle nothing, the broker redelivers.
      if (Cause.isInterruptedOnly(sent.cause)) return Effect.interrupt
      const reason = describeCause(sent.cause)
      return Effect.succeed(
        attempt >= maxAttempts
          ? Settlement.DeadLetter({ reason: `${reason}; gave up after ${attempt} attempts`, poison: false })
          : Settlement.Retry({ reason: `${reason} (attempt ${attempt} of ${maxAttempts})` })
      )
    })
  )
}

const ACK: Effect.Effect<Settlement> = Effect.succeed(Settlement.Ack())

/**
 * Annotates every later log line of the current fiber. Not `Effect.annotateLogs`: that sets and
 * restores the annotation around an effect, which measured 5.8 µs per delivery against 1.6 µs for
 * this one update (a delivery's fiber ends with it, so nothing needs restoring).
 */
const annotateFiberLogs = (key: string, value: string) =>
  FiberRef.update(FiberRef.currentLogAnnotations, HashMap.set<string, unknown>(key, value))

/**
 * Applies a settlement on the channel that delivered the message, never on another: a delivery tag
 * means nothing to a newer channel (the broker would close it with 406). If that channel has died,
 * the broker has already put the message back, and will deliver it again.
 */
const settle = (channel: amqp.Channel, acks: AckCoalescer, message: amqp.Message, settlement: Settlement) => {
  // A switch rather than `Settlement.$match`: under tsx (`npm start`), which keeps function names,
  // each arrow in a `$match` object costs a `defineProperty` per call, 6% of the consumer's time
  // when draining a backlog.
  try {
    switch (settlement._tag) {
      case "Ack":
        acks.ack(message)
        break
      case "Retry":
        acks.forget(message)
        channel.reject(message, true)
        break
      case "DeadLetter":
        acks.forget(message)
        channel.reject(message, false)
    }
  } catch {
    return Effect.logWarning("The channel closed before this delivery was settled; the broker will redeliver it")
  }
  switch (settlement._tag) {
    case "Ack":
      // The one sign that a command was processed; the fault-injection suite counts these.
      return Effect.logDebug(`Notification sent for order ${String(message.properties.messageId ?? "unknown")}`)
    case "Retry":
      return Effect.logWarning(`Send failed, requeued: ${settlement.reason}`)
    case "DeadLetter":
      return settlement.poison
        // Not a command, so there is no order to name; the message's own id is what there is.
        ? Effect.logError(`Dead-lettered: ${settlement.reason}`).pipe(
          Effect.annotateLogs("messageId", String(message.properties.messageId ?? "none"))
        )
        : Effect.logError(`Dead-lettered: ${settlement.reason}`)
  }
}

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
  const tracing = yield* tracingEnabled

  const handle = (channel: amqp.Channel, acks: AckCoalescer, message: amqp.Message) => {
    const processed = processDelivery(message, maxAttempts).pipe(
      observeDelivery(message),
      Effect.flatMap((settlement) => settle(channel, acks, message, settlement))
    )
    // Continues the publisher's trace from the message headers.
    return tracing ? withConsumeSpan(message, commandQueue)(processed) : processed
  }

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
      const run = yield* FiberSet.runtime(inFlight)<NotificationSender>()
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
            // Their acks then go out together at the end, as one frame (see AckCoalescer).
            Effect.zipRight(Effect.sync(acks.holdUntilFlush)),
            Effect.zipRight(Effect.promise(() => channel.cancel(consumerTag).catch(() => undefined))),
            Effect.zipRight(FiberSet.awaitEmpty(inFlight)),
            atMost(shutdownTimeout),
            // The last acks may still wait for the end of the tick; they must go before the channel closes.
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
