import type * as amqp from "amqplib"
import { Data, Effect, Either } from "effect"
import { closeQuietly, openChannel } from "./AmqpConnection"

/**
 * A work queue and its dead-letter queue: both durable quorum queues, declared identically by
 * every service that touches them, so that whichever starts first creates them and the others'
 * declarations are no-ops (or created beforehand by `npm run topology`, see `declareTopology`).
 */
export const deadLetterQueueOf = (queue: string) => `${queue}.dlq`

export const workQueueArguments = (queue: string) => ({
  "x-queue-type": "quorum",
  // Rejected messages (poison, or out of attempts) go to the dead-letter queue through the
  // default exchange. At-least-once dead-lettering keeps each one until the DLQ has confirmed it;
  // RabbitMQ requires `reject-publish` overflow for that strategy.
  "x-dead-letter-exchange": "",
  "x-dead-letter-routing-key": deadLetterQueueOf(queue),
  "x-dead-letter-strategy": "at-least-once",
  "x-overflow": "reject-publish"
})

/** One piece of the topology, as data: what a service declares on every connection, and what `npm run topology` creates. */
export type Declaration = Data.TaggedEnum<{
  /** A durable queue. */
  Queue: { readonly name: string; readonly arguments: Record<string, unknown> }
  /** A durable topic exchange, for events that any number of services may subscribe to. */
  Exchange: { readonly name: string }
  Binding: { readonly queue: string; readonly exchange: string; readonly pattern: string }
}>
export const Declaration = Data.taggedEnum<Declaration>()

/** The dead-letter queue, then the work queue. */
export const workQueueTopology = (queue: string): ReadonlyArray<Declaration> => [
  Declaration.Queue({ name: deadLetterQueueOf(queue), arguments: { "x-queue-type": "quorum" } }),
  Declaration.Queue({ name: queue, arguments: workQueueArguments(queue) })
]

export class TopologyMismatch extends Data.TaggedError("TopologyMismatch")<{
  readonly queue: string
  readonly detail: string
}> {
  override get message() {
    return `Queue "${this.queue}" already exists with other arguments than this service declares (${this.detail}). ` +
      `Delete it (rabbitmqctl delete_queue ${this.queue}) or configure another queue name.`
  }
}

export class TopologyDeclarationFailed extends Data.TaggedError("TopologyDeclarationFailed")<{
  readonly what: string
  readonly cause: unknown
}> {
  override get message() {
    return `Could not declare ${this.what}: ${String(this.cause)}`
  }
}

/** A declaration this user may not make (ACCESS_REFUSED), of something that does not exist either. */
export class TopologyMissing extends Data.TaggedError("TopologyMissing")<{ readonly what: string }> {
  override get message() {
    return `${this.what} does not exist, and this user may not declare it (ACCESS_REFUSED): ` +
      "create the topology first (npm run topology, as a user that may configure it)"
  }
}

const ACCESS_REFUSED = 403
const NOT_FOUND = 404
const PRECONDITION_FAILED = 406

const codeOf = (cause: unknown) => (cause as { code?: number } | undefined)?.code

export const describeDeclaration = (declaration: Declaration) =>
  Declaration.$match(declaration, {
    Queue: ({ name }) => `queue "${name}"`,
    Exchange: ({ name }) => `exchange "${name}"`,
    Binding: ({ exchange, queue }) => `binding of "${queue}" to "${exchange}"`
  })

export const declareQueue = (channel: amqp.Channel, queue: string, args: Record<string, unknown>) =>
  Effect.tryPromise({
    try: () => channel.assertQueue(queue, { durable: true, arguments: args }),
    catch: (cause) =>
      codeOf(cause) === PRECONDITION_FAILED
        ? new TopologyMismatch({ queue, detail: String((cause as Error).message) })
        : new TopologyDeclarationFailed({ what: `queue "${queue}"`, cause })
  })

/** Declares one piece; idempotent. A failure closes the channel (406, 403). */
export const declareOne = (channel: amqp.Channel, declaration: Declaration) =>
  Declaration.$match(declaration, {
    Queue: ({ arguments: args, name }) => Effect.asVoid(declareQueue(channel, name, args)),
    Exchange: ({ name }) =>
      Effect.tryPromise({
        try: () => channel.assertExchange(name, "topic", { durable: true }),
        catch: (cause) => new TopologyDeclarationFailed({ what: describeDeclaration(declaration), cause })
      }),
    Binding: ({ exchange, pattern, queue }) =>
      Effect.tryPromise({
        try: () => channel.bindQueue(queue, exchange, pattern),
        catch: (cause) => new TopologyDeclarationFailed({ what: describeDeclaration(declaration), cause })
      })
  }).pipe(Effect.asVoid)

/** Declares each piece in turn on `channel`; the first failure stops it. */
export const declareAll = (channel: amqp.Channel, topology: ReadonlyArray<Declaration>) =>
  Effect.forEach(topology, (declaration) => declareOne(channel, declaration), { discard: true })

/**
 * Declares the dead-letter queue, then the work queue. A mismatch closes the channel (406);
 * callers open a fresh one before retrying.
 */
export const declareWorkQueue = Effect.fn("QueueTopology.declareWorkQueue")(
  function*(channel: amqp.Channel, queue: string) {
    yield* declareAll(channel, workQueueTopology(queue))
  }
)

/** A passive declaration: succeeds, whatever the user's permissions, if the queue or exchange exists. */
const check = (channel: amqp.Channel, declaration: Exclude<Declaration, { readonly _tag: "Binding" }>) =>
  Effect.tryPromise({
    try: () => (declaration._tag === "Exchange" ? channel.checkExchange(declaration.name) : channel.checkQueue(declaration.name)),
    catch: (cause) =>
      codeOf(cause) === NOT_FOUND
        ? new TopologyMissing({ what: describeDeclaration(declaration) })
        : new TopologyDeclarationFailed({ what: describeDeclaration(declaration), cause })
  })

/**
 * Declares `topology` on channels of its own, so that a refusal, which closes its channel, costs
 * the caller's channel nothing. A queue or exchange this user may not declare (ACCESS_REFUSED: no
 * configure permission on its name) is checked passively instead, which needs no permission: where
 * the services' users may not configure anything, the topology is created beforehand (`npm run
 * topology`) and the services only check that it is there. A binding has no passive form; binding
 * needs write on the queue and read on the exchange.
 */
export const declareTopology = (connection: amqp.ChannelModel, topology: ReadonlyArray<Declaration>) =>
  topology.length === 0 ? Effect.void : Effect.scoped(Effect.gen(function*() {
    const freshChannel = Effect.acquireRelease(
      openChannel(connection, () => connection.createChannel()).pipe(
        // Without a listener, the broker closing the channel would be thrown as an 'error' event.
        Effect.tap((channel) => Effect.sync(() => channel.on("error", () => undefined))),
        Effect.mapError((cause) => new TopologyDeclarationFailed({ what: "the topology (no channel)", cause }))
      ),
      closeQuietly
    )
    let channel = yield* freshChannel
    const checked: Array<string> = []
    for (const declaration of topology) {
      const declared = yield* Effect.either(declareOne(channel, declaration))
      if (Either.isRight(declared)) continue
      const refused = declared.left._tag === "TopologyDeclarationFailed" && codeOf(declared.left.cause) === ACCESS_REFUSED
      if (!refused || declaration._tag === "Binding") return yield* declared.left
      channel = yield* freshChannel
      yield* check(channel, declaration)
      checked.push(describeDeclaration(declaration))
    }
    if (checked.length > 0) {
      yield* Effect.logInfo(`Not allowed to declare ${checked.join(", ")}; checked that they exist instead`)
    }
  }))
