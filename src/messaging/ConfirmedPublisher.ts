import type * as amqp from "amqplib"
import { Data, Deferred, Duration, Effect, type Scope } from "effect"
import { AmqpConnection, closeQuietly, openChannel } from "./AmqpConnection"
import { type Declaration, declareTopology } from "./QueueTopology"

/**
 * A publish the broker did not take responsibility for. `reason`: `unroutable`, it was returned (no
 * queue is bound for it); `refused`, not sent or nacked; `uncertain`, it went out and its confirm
 * never came (lost connection, deadline), so the broker may still have queued it.
 */
export class PublishFailed extends Data.TaggedError("PublishFailed")<{
  readonly message: string
  readonly reason: "unroutable" | "refused" | "uncertain"
}> {}

/** What a message is published with; `messageId` is required, since a return is matched by it. */
export type PublishOptions = amqp.Options.Publish & { readonly messageId: string }

export interface ConfirmedPublisher {
  /** Publishes `mandatory`, and succeeds only once the broker has confirmed it. */
  readonly publish: (
    exchange: string,
    routingKey: string,
    content: Buffer,
    options: PublishOptions
  ) => Effect.Effect<void, PublishFailed>
  /** Whether a confirm channel is open right now (readiness). */
  readonly isReady: Effect.Effect<boolean>
}

/** A confirm channel, and the messageIds the broker returned on it as unroutable (their confirm follows the return). */
export interface ConfirmSession {
  readonly channel: amqp.ConfirmChannel
  readonly returned: Set<string>
}

/** A confirm channel of its own for `publishConfirmed`: it tracks what the broker returns. */
export const confirmSessionOf = (channel: amqp.ConfirmChannel): ConfirmSession => {
  const returned = new Set<string>()
  channel.on("return", (message: amqp.Message) => returned.add(String(message.properties.messageId)))
  return { channel, returned }
}

const refuse = (message: string, reason: PublishFailed["reason"] = "refused") =>
  Effect.fail(new PublishFailed({ message, reason }))

/**
 * Publishes `mandatory` on the session's channel and resumes on the broker's confirm (or return,
 * nack, lost channel, deadline). One `Effect.async` with a plain timer: this runs once per message
 * (see docs/performance.md).
 */
export const publishConfirmed = (
  session: ConfirmSession,
  exchange: string,
  routingKey: string,
  content: Buffer,
  options: PublishOptions,
  confirmTimeoutMillis: number
) =>
  Effect.async<void, PublishFailed>((resume) => {
    const { channel, returned } = session
    const deadline = setTimeout(
      () => resume(refuse(`No confirm came within ${Duration.format(confirmTimeoutMillis)}`, "uncertain")),
      confirmTimeoutMillis
    )
    const settle = (outcome: Effect.Effect<void, PublishFailed>) => {
      clearTimeout(deadline)
      resume(outcome)
    }
    try {
      channel.publish(exchange, routingKey, content, { ...options, mandatory: true }, (error) => {
        if (returned.delete(options.messageId)) {
          settle(refuse(`The broker could not route the message to "${routingKey}"`, "unroutable"))
        } else if (error instanceof Error && error.message === "channel closed") {
          settle(refuse("The connection to the broker was lost before its confirm", "uncertain"))
        } else if (error) {
          settle(refuse("The broker refused the message (nack)"))
        } else {
          settle(Effect.void)
        }
      })
    } catch (error) {
      // The channel closed between our check and the publish, or amqplib could not encode the message
      // (a header it decoded but cannot write back, such as a timestamp past 2^64 - 1).
      settle(refuse(`Could not publish on the broker channel (${(error as Error).message})`))
    }
    // No canceler: an interrupted publish leaves its deadline to fire into a fiber that has
    // ended, which ignores it; a canceler would make every publish an uninterruptible region.
  })

/**
 * A confirm channel on every connection, for the life of the surrounding scope: once `topology`
 * (what the feature publishes to) is declared, the channel is open for publishing until it closes.
 * Knows nothing of what is published; each feature names its exchange, routing key and properties.
 */
export const makeConfirmedPublisher = (options: {
  readonly topology: ReadonlyArray<Declaration>
  readonly confirmTimeout: Duration.Duration
}): Effect.Effect<ConfirmedPublisher, never, AmqpConnection | Scope.Scope> =>
  Effect.gen(function*() {
    const connection = yield* AmqpConnection
    // The open confirm channel, if any. A plain variable, not a `Ref`: every publish reads it
    // synchronously, and only the session below writes it.
    let session: ConfirmSession | undefined
    const confirmTimeoutMillis = Duration.toMillis(options.confirmTimeout)

    const confirmChannelSession = (model: amqp.ChannelModel) =>
      Effect.gen(function*() {
        yield* declareTopology(model, options.topology)
        const channel = yield* Effect.acquireRelease(
          openChannel(model, () => model.createConfirmChannel()),
          (channel) => Effect.zipRight(Effect.sync(() => (session = undefined)), closeQuietly(channel))
        )
        const closed = yield* Deferred.make<void>()
        channel.on("error", () => undefined)
        channel.on("close", () => Deferred.unsafeDone(closed, Effect.void))
        session = confirmSessionOf(channel)
        yield* Deferred.await(closed)
        session = undefined
      })

    yield* Effect.forkScoped(connection.withEveryConnection(confirmChannelSession))

    const publish = (exchange: string, routingKey: string, content: Buffer, publishOptions: PublishOptions) => {
      if (session === undefined) {
        return refuse("No confirm channel to the broker (not connected, or the topology could not be declared)")
      }
      const blockedBy = connection.blockedBy()
      if (blockedBy !== undefined) return refuse(`The broker is refusing publishes (${blockedBy})`)
      return publishConfirmed(session, exchange, routingKey, content, publishOptions, confirmTimeoutMillis)
    }

    return { publish, isReady: Effect.sync(() => session !== undefined) }
  })
