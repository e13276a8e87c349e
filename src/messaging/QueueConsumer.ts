import type * as amqp from "amqplib"
import { Deferred, type Duration, Effect, Exit, FiberSet, Ref, type Scope } from "effect"
import { atMost } from "../runtime/atMost"
import { type AckCoalescer, makeAckCoalescer } from "./AckCoalescer"
import { AmqpConnection, closeQuietly, openChannel } from "./AmqpConnection"
import { Settlement } from "./Settlement"

const REQUEUE = Settlement.Retry({ reason: "unexpected failure" })

export interface QueueConsumerOptions<R> {
  readonly queue: string
  /** Unacknowledged deliveries at once = messages processed at once. */
  readonly prefetch: number
  /** Declares what the consumer reads from, on each new channel, before it subscribes. */
  readonly declare: (channel: amqp.Channel) => Effect.Effect<void, unknown>
  /** Decides what becomes of one delivery; each runs in a fiber of its own. */
  readonly handle: (message: amqp.Message) => Effect.Effect<Settlement, never, R>
  /** After the settlement reached the channel: the feature's own log line about it. */
  readonly settled: (message: amqp.Message, settlement: Settlement) => Effect.Effect<void>
  /** How long a shutdown waits for the deliveries in flight to finish and be settled. */
  readonly shutdownTimeout: Duration.Duration
}

/**
 * Applies a settlement on the channel that delivered the message, never on another: a delivery tag
 * means nothing to a newer channel (the broker would close it with 406). If that channel has died,
 * the broker has already put the message back, and will deliver it again. False then.
 */
const applySettlement = (channel: amqp.Channel, acks: AckCoalescer, message: amqp.Message, settlement: Settlement) => {
  // A switch rather than `Settlement.$match`: tsx keeps function names, and each arrow in a
  // `$match` object then costs a `defineProperty` per call (see docs/performance.md).
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
    return true
  } catch {
    return false
  }
}

/**
 * Consumes `queue` for the life of the surrounding scope, one channel and one consumer per
 * connection, up to `prefetch` deliveries in flight, each settled on the channel that delivered it.
 * Knows nothing of what the messages mean: the feature's `handle` decides each settlement.
 *
 * On shutdown it stops taking deliveries, lets those in flight finish and settle within
 * `shutdownTimeout`, and only then closes the channel. On a channel that died, nothing in flight can
 * be settled any more: the broker redelivers it, so those are interrupted and the next session starts.
 */
export const consumeQueue = <R>(
  options: QueueConsumerOptions<R>
): Effect.Effect<{ readonly isReady: Effect.Effect<boolean> }, never, AmqpConnection | Scope.Scope | R> =>
  Effect.gen(function*() {
    const connection = yield* AmqpConnection
    const subscribed = yield* Ref.make(false)
    const { prefetch, queue, shutdownTimeout } = options

    const handle = (channel: amqp.Channel, acks: AckCoalescer, message: amqp.Message) =>
      Effect.flatMap(decide(message), (settlement) =>
        applySettlement(channel, acks, message, settlement)
          ? options.settled(message, settlement)
          : Effect.logWarning("The channel closed before this delivery was settled; the broker will redeliver it"))

    // A handler that dies (a bug) must not leave its delivery unsettled for the life of the channel:
    // it is logged and requeued. An interrupted one (shutdown) is left to the broker.
    const decide = (message: amqp.Message) =>
      options.handle(message).pipe(
        Effect.catchAllDefect((defect) =>
          Effect.as(Effect.logError("Processing a delivery failed unexpectedly; requeued", defect), REQUEUE))
      )

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
        yield* options.declare(channel)
        yield* Effect.tryPromise(() => channel.prefetch(prefetch))

        // Released before the consumer below: in-flight work is interrupted only after the drain.
        const inFlight = yield* FiberSet.make<void>()
        const run = yield* FiberSet.runtime(inFlight)<R>()
        yield* Effect.acquireRelease(
          Effect.tryPromise(() =>
            channel.consume(queue, (message) => {
              // null: the broker cancelled the consumer (queue deleted); start a new session.
              if (message === null) Deferred.unsafeDone(ended, Exit.void)
              else {
                acks.received(message)
                run(handle(channel, acks, message))
              }
            })
          ),
          ({ consumerTag }) =>
            channelClosed ? Effect.void : FiberSet.size(inFlight).pipe(
              Effect.flatMap((count) => Effect.logInfo(`Stopped consuming ${queue}; finishing ${count} in flight`)),
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
        yield* Effect.logInfo(`Consuming ${queue} with prefetch ${prefetch}`)
        yield* Deferred.await(ended)
      })

    yield* Effect.forkScoped(connection.withEveryConnection(consumeSession))
    return { isReady: Ref.get(subscribed) }
  })
