import type * as amqp from "amqplib"
import { Clock, Data, Duration, Effect, type Scope } from "effect"
import { errorMessage } from "../runtime/describe"
import { closeQuietly, openChannel } from "./AmqpConnection"
import { confirmSessionOf, type PublishFailed, publishConfirmed } from "./ConfirmedPublisher"
import { copyOptions, countHeader, REPLAYED_AT, withoutDeliveryCounts, withoutStory } from "./FailureStory"

/**
 * A dead-letter queue opened for an operator: its messages are read and held unacknowledged, so that
 * none leaves the queue until it is replayed or dropped, and a tool that dies gives them all back.
 * Knows nothing of what the messages carry; the caller chooses which to replay and which to drop.
 */

export class DeadLetterQueueNotFound extends Data.TaggedError("DeadLetterQueueNotFound")<{
  readonly queue: string
}> {
  override get message() {
    return `The dead-letter queue "${this.queue}" does not exist on this broker ` +
      "(no service has declared it yet, or COMMAND_QUEUE names another queue)"
  }
}

/** A broker operation on the dead-letter queue that did not succeed; `doing` says which. */
export class DeadLetterQueueFailed extends Data.TaggedError("DeadLetterQueueFailed")<{
  readonly doing: string
  readonly cause: unknown
}> {
  override get message() {
    return `Could not ${this.doing} (${errorMessage(this.cause)})`
  }
}

export interface HeldDeadLetters {
  readonly queue: string
  /** The messages read, in queue order, each held until it is replayed, dropped or released. */
  readonly messages: ReadonlyArray<amqp.GetMessage>
  /** The queue's messages as the scan ended: those held, and those past the limit, left unread. */
  readonly total: number
  /**
   * Publishes a copy to `targetQueue` (default exchange, `mandatory`), with the original's body and
   * properties and none of its failure story, so that it counts as a fresh message with fresh
   * attempts. Only once the broker has confirmed the copy is the original acked; a copy returned,
   * refused or unconfirmed is a failure, and the original stays.
   */
  readonly replay: (
    message: amqp.GetMessage,
    targetQueue: string
  ) => Effect.Effect<void, PublishFailed | DeadLetterQueueFailed>
  /** Removes the message from the queue for good. */
  readonly drop: (message: amqp.GetMessage) => Effect.Effect<void, DeadLetterQueueFailed>
  /**
   * Gives back every message neither replayed nor dropped, and ends the hold: returns once the
   * broker has taken every ack and return. One that has been given back often is refreshed first
   * (see `REFRESH_AT_DELIVERY_COUNT`); a refresh that fails leaves that message as it was.
   */
  readonly release: Effect.Effect<Released, DeadLetterQueueFailed>
}

export interface Released {
  /** Messages given back as they were. */
  readonly returned: number
  /** Messages replaced by a fresh copy at the back of the queue. */
  readonly refreshed: number
  /** Why some refreshes failed (those messages were given back as they were). */
  readonly refreshFailures: ReadonlyArray<PublishFailed>
}

/**
 * Every look at a message gives it back to the queue, and RabbitMQ 4.0 to 4.2 count each return
 * towards a quorum queue's delivery limit, which has a default there: past it the broker drops the
 * message, since a dead-letter queue has no dead-letter queue of its own. So a message given back
 * this often is replaced instead by a copy that counts from zero. Well below the default limit, to
 * leave room for looks by other means (the management UI) in between.
 */
const REFRESH_AT_DELIVERY_COUNT = 10

/** How long closing the channel, which waits for the broker to have taken every ack, may take. */
const CLOSE_TIMEOUT = Duration.seconds(5)

const NOT_FOUND = 404

/**
 * Reads `queue` from its head, up to `limit` messages (all of them without one), and holds them
 * for the life of the scope. Closing the scope without `release` (a failure, an interruption) gives
 * every unsettled message back as it was.
 */
export const holdDeadLetters = (
  connection: amqp.ChannelModel,
  queue: string,
  options: { readonly limit?: number | undefined; readonly confirmTimeout: Duration.Duration }
): Effect.Effect<HeldDeadLetters, DeadLetterQueueNotFound | DeadLetterQueueFailed, Scope.Scope> =>
  Effect.gen(function*() {
    const failed = (doing: string) => (cause: unknown) => new DeadLetterQueueFailed({ doing, cause })
    const acquireChannel = <C extends amqp.Channel>(open: () => Promise<C>) =>
      Effect.acquireRelease(
        openChannel(connection, open).pipe(
          // Without a listener, an 'error' event (the broker closing the channel) would be thrown.
          Effect.tap((channel) => Effect.sync(() => channel.on("error", () => undefined))),
          Effect.mapError(failed("open a channel"))
        ),
        closeQuietly
      )

    const holding = yield* acquireChannel(() => connection.createChannel())
    yield* Effect.tryPromise({
      try: () => holding.checkQueue(queue),
      catch: (cause) =>
        (cause as { code?: number }).code === NOT_FOUND
          ? new DeadLetterQueueNotFound({ queue })
          : failed(`check ${queue}`)(cause)
    })
    const confirmChannel = yield* acquireChannel(() => connection.createConfirmChannel())
    const session = confirmSessionOf(confirmChannel)
    const confirmTimeoutMillis = Duration.toMillis(options.confirmTimeout)

    const messages: Array<amqp.GetMessage> = []
    let unread = 0
    while (options.limit === undefined || messages.length < options.limit) {
      const message = yield* Effect.tryPromise({
        try: () => holding.get(queue, { noAck: false }),
        catch: failed(`read ${queue}`)
      })
      if (message === false) {
        unread = 0
        break
      }
      messages.push(message)
      unread = message.fields.messageCount
    }

    // A message is settled once, on the channel that delivered it: a second ack would close that
    // channel and give back every message still held.
    const settled = new Set<amqp.GetMessage>()
    const ack = (message: amqp.GetMessage) =>
      Effect.suspend(() => {
        if (settled.has(message)) return Effect.dieMessage("A held dead letter was settled twice")
        return Effect.try({ try: () => holding.ack(message), catch: failed(`remove a message from ${queue}`) }).pipe(
          Effect.tap(() => settled.add(message))
        )
      })

    const replay = (message: amqp.GetMessage, targetQueue: string) =>
      Effect.gen(function*() {
        if (settled.has(message)) return yield* Effect.dieMessage("A settled dead letter was replayed")
        const replayedAt = new Date(yield* Clock.currentTimeMillis).toISOString()
        const headers = { ...withoutStory(message), [REPLAYED_AT]: replayedAt }
        yield* publishConfirmed(session, "", targetQueue, message.content, copyOptions(message, headers), confirmTimeoutMillis)
        yield* ack(message)
      })

    const refresh = (message: amqp.GetMessage) =>
      publishConfirmed(session, "", queue, message.content, copyOptions(message, withoutDeliveryCounts(message)), confirmTimeoutMillis)

    const release = Effect.gen(function*() {
      const unsettled = messages.filter((message) => !settled.has(message))
      const worn = unsettled.filter((message) =>
        countHeader(message.properties.headers?.["x-delivery-count"]) >= REFRESH_AT_DELIVERY_COUNT
      )
      const refreshFailures: Array<PublishFailed> = []
      for (const message of worn) {
        const refreshed = yield* Effect.either(refresh(message))
        if (refreshed._tag === "Left") refreshFailures.push(refreshed.left)
        else yield* ack(message)
      }
      // The broker answers a close only once it has taken everything sent before on the channel:
      // every ack is in, and every message still held is back in the queue.
      const giveBack = failed(`give the messages back to ${queue}`)
      yield* Effect.tryPromise({ try: () => holding.close(), catch: giveBack }).pipe(
        Effect.timeoutFail({ duration: CLOSE_TIMEOUT, onTimeout: () => giveBack("no answer") })
      )
      const refreshedCount = worn.length - refreshFailures.length
      return { returned: unsettled.length - refreshedCount, refreshed: refreshedCount, refreshFailures }
    })

    return { queue, messages, total: messages.length + unread, replay, drop: ack, release } satisfies HeldDeadLetters
  })
