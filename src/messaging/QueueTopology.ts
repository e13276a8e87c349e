import type * as amqp from "amqplib"
import { Data, Effect } from "effect"

/**
 * A work queue and its dead-letter queue: both durable quorum queues, declared identically by
 * every service that touches them, so that whichever starts first creates them and the others'
 * declarations are no-ops.
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

const PRECONDITION_FAILED = 406

export const declareQueue = (channel: amqp.Channel, queue: string, args: Record<string, unknown>) =>
  Effect.tryPromise({
    try: () => channel.assertQueue(queue, { durable: true, arguments: args }),
    catch: (cause) =>
      (cause as { code?: number }).code === PRECONDITION_FAILED
        ? new TopologyMismatch({ queue, detail: String((cause as Error).message) })
        : new TopologyDeclarationFailed({ what: `queue "${queue}"`, cause })
  })

/**
 * Declares the dead-letter queue, then the work queue. A mismatch closes the channel (406);
 * callers open a fresh one before retrying.
 */
export const declareWorkQueue = Effect.fn("QueueTopology.declareWorkQueue")(
  function*(channel: amqp.Channel, queue: string) {
    yield* declareQueue(channel, deadLetterQueueOf(queue), { "x-queue-type": "quorum" })
    yield* declareQueue(channel, queue, workQueueArguments(queue))
  }
)

/** A durable topic exchange, for events that any number of services may subscribe to. */
export const declareTopicExchange = (channel: amqp.Channel, exchange: string) =>
  Effect.tryPromise({
    try: () => channel.assertExchange(exchange, "topic", { durable: true }),
    catch: (cause) => new TopologyDeclarationFailed({ what: `exchange "${exchange}"`, cause })
  })

/** Binds `queue` to `exchange` for `pattern`; idempotent. */
export const bindQueue = (channel: amqp.Channel, queue: string, exchange: string, pattern: string) =>
  Effect.tryPromise({
    try: () => channel.bindQueue(queue, exchange, pattern),
    catch: (cause) => new TopologyDeclarationFailed({ what: `binding of "${queue}" to "${exchange}"`, cause })
  })
