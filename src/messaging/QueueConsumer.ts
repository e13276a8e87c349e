import type * as amqp from "amqplib"
import { Clock, Deferred, type Duration, Effect, Exit, FiberSet, Ref, type Scope } from "effect"
import { atMost } from "../runtime/atMost"
import { type AckCoalescer, makeAckCoalescer } from "./AckCoalescer"
import { AmqpConnection, closeQuietly, openChannel } from "./AmqpConnection"
import { makeConfirmedPublisher } from "./ConfirmedPublisher"
import { retryQueueOf } from "./DelayedRetry"
import { copyOptions, readStory, withFailure } from "./FailureStory"
import { type Declaration, deadLetterQueueOf, declareTopology } from "./QueueTopology"
import { Settlement } from "./Settlement"

const REQUEUE = Settlement.Retry({ reason: "unexpected failure" })

export interface QueueConsumerOptions<R> {
  readonly queue: string
  /** Unacknowledged deliveries at once = messages processed at once. */
  readonly prefetch: number
  /** What the consumer reads from, declared on each new connection before it subscribes. */
  readonly topology: ReadonlyArray<Declaration>
  /** Decides what becomes of one delivery; each runs in a fiber of its own. */
  readonly handle: (message: amqp.Message) => Effect.Effect<Settlement, never, R>
  /** After the settlement reached the channel: the feature's own log line about it. */
  readonly settled: (message: amqp.Message, settlement: Settlement) => Effect.Effect<void>
  /** How long a shutdown waits for the deliveries in flight to finish and be settled. */
  readonly shutdownTimeout: Duration.Duration
  /** How long moving a message to a delay queue or the dead-letter queue waits for the broker's confirm. */
  readonly publishTimeout: Duration.Duration
}

/**
 * Applies a settlement on the channel that delivered the message, never on another: a delivery tag
 * means nothing to a newer channel (the broker would close it with 406). If that channel has died,
 * the broker has already put the message back, and will deliver it again. False then.
 */
const settleOnChannel = (channel: amqp.Channel, acks: AckCoalescer, message: amqp.Message, outcome: "ack" | "requeue" | "reject") => {
  try {
    switch (outcome) {
      case "ack":
        acks.ack(message)
        break
      case "requeue":
        acks.forget(message)
        channel.reject(message, true)
        break
      case "reject":
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
 * Knows nothing of what the messages mean: the feature's `handle` decides each settlement. A message
 * retried later or dead-lettered is moved by publishing a copy with its failure story on a confirm
 * channel of its own, so the dead-letter queue says why (the broker's own dead-lettering would not).
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

    const publisher = yield* makeConfirmedPublisher({ topology: [], confirmTimeout: options.publishTimeout })

    /**
     * When each message this consumer requeued (by `messageId`) first failed. A requeue carries no
     * headers, so without this a story's first failure would be the one that moved the message. A
     * requeued message usually comes back to the same consumer (to the head of the queue); one that
     * went to another is forgotten once the memory is full, and its story starts at its move.
     */
    const firstFailures = new Map<string, number>()
    const REMEMBERED_FIRST_FAILURES = 10_000
    const rememberFirstFailure = (message: amqp.Message, now: number) => {
      const id = message.properties.messageId
      if (typeof id !== "string" || firstFailures.has(id) || readStory(message).firstFailedAt !== undefined) return
      if (firstFailures.size >= REMEMBERED_FIRST_FAILURES) firstFailures.delete(firstFailures.keys().next().value!)
      firstFailures.set(id, now)
    }
    const takeFirstFailure = (message: amqp.Message) => {
      const id = message.properties.messageId
      if (firstFailures.size === 0 || typeof id !== "string") return undefined
      const at = firstFailures.get(id)
      firstFailures.delete(id)
      return at
    }

    /**
     * Moves a copy of the message, its story updated, to `target`, and acks the delivery once the
     * broker has confirmed the copy (a crash in between leaves both: a duplicate, never a loss). If
     * the copy is refused, `otherwise` settles the delivery as the broker can without us.
     */
    const move = (
      channel: amqp.Channel,
      acks: AckCoalescer,
      message: amqp.Message,
      move: { readonly target: string; readonly reason: string; readonly attempts: number; readonly waitMillis?: number },
      otherwise: { readonly outcome: "requeue" | "reject"; readonly instead: string }
    ) =>
      Effect.flatMap(Clock.currentTimeMillis, (now) => {
        const headers = withFailure(message, { ...move, failedAt: new Date(now), queue }, takeFirstFailure(message) ?? now)
        return publisher.publish("", move.target, message.content, copyOptions(message, headers, move.waitMillis)).pipe(
          // Settled only once the copy's fate is known: lazily, never while the effect is built.
          Effect.map(() => settleOnChannel(channel, acks, message, "ack")),
          Effect.catchAll((error) =>
            Effect.map(
              Effect.logWarning(`Could not move the message to ${move.target} (${error.message}); ${otherwise.instead}`),
              () => settleOnChannel(channel, acks, message, otherwise.outcome)
            )
          )
        )
      })

    const apply = (channel: amqp.Channel, acks: AckCoalescer, message: amqp.Message, settlement: Settlement) => {
      // A switch rather than `Settlement.$match`: tsx keeps function names, and each arrow in a
      // `$match` object then costs a `defineProperty` per call (see docs/performance.md).
      switch (settlement._tag) {
        case "Ack":
          takeFirstFailure(message)
          return Effect.succeed(settleOnChannel(channel, acks, message, "ack"))
        case "Retry":
          return Effect.map(Clock.currentTimeMillis, (now) => {
            rememberFirstFailure(message, now)
            return settleOnChannel(channel, acks, message, "requeue")
          })
        case "RetryLater":
          return move(channel, acks, message, {
            target: retryQueueOf(queue, settlement.delayMillis),
            reason: settlement.reason,
            attempts: settlement.attempts,
            waitMillis: settlement.waitMillis
          }, { outcome: "requeue", instead: "requeued it for an immediate retry instead" })
        case "DeadLetter":
          return move(channel, acks, message, {
            target: deadLetterQueueOf(queue),
            reason: settlement.reason,
            attempts: settlement.attempts
          }, { outcome: "reject", instead: "rejected it to the dead-letter queue without its story instead" })
      }
    }

    const handle = (channel: amqp.Channel, acks: AckCoalescer, message: amqp.Message) =>
      Effect.flatMap(decide(message), (settlement) =>
        Effect.flatMap(apply(channel, acks, message, settlement), (settled) =>
          settled
            ? options.settled(message, settlement)
            : Effect.logWarning("The channel closed before this delivery was settled; the broker will redeliver it")))

    // A handler that dies (a bug) must not leave its delivery unsettled for the life of the channel:
    // it is logged and requeued. An interrupted one (shutdown) is left to the broker.
    const decide = (message: amqp.Message) =>
      // Suspended: a handler that throws while building its effect is a defect here, not in amqplib's callback.
      Effect.suspend(() => options.handle(message)).pipe(
        Effect.catchAllDefect((defect) =>
          Effect.as(Effect.logError("Processing a delivery failed unexpectedly; requeued", defect), REQUEUE))
      )

    const consumeSession = (model: amqp.ChannelModel) =>
      Effect.gen(function*() {
        yield* declareTopology(model, options.topology)
        const channel = yield* Effect.acquireRelease(openChannel(model, () => model.createChannel()), closeQuietly)
        const ended = yield* Deferred.make<void>()
        let channelClosed = false
        channel.on("error", () => undefined)
        channel.on("close", () => {
          channelClosed = true
          Deferred.unsafeDone(ended, Exit.void)
        })
        const acks = makeAckCoalescer(channel)
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
