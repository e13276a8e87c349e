import type * as amqp from "amqplib"
import { Data, Effect } from "effect"

/**
 * The command queue and its dead-letter queue, declared identically by both services so that
 * whichever starts first creates them and the other's declaration is a no-op.
 */
export const deadLetterQueueOf = (commandQueue: string) => `${commandQueue}.dlq`

export const commandQueueArguments = (commandQueue: string) => ({
  "x-queue-type": "quorum",
  // Rejected commands (poison, or out of attempts) go to the dead-letter queue through the
  // default exchange. At-least-once dead-lettering keeps each one until the DLQ has confirmed it;
  // RabbitMQ requires `reject-publish` overflow for that strategy.
  "x-dead-letter-exchange": "",
  "x-dead-letter-routing-key": deadLetterQueueOf(commandQueue),
  "x-dead-letter-strategy": "at-least-once",
  "x-overflow": "reject-publish"
})

export class TopologyMismatch extends Data.TaggedError("TopologyMismatch")<{
  readonly queue: string
  readonly detail: string
}> {
  override get message() {
    return `Queue "${this.queue}" already exists with other arguments than this service declares (${this.detail}). ` +
      `Delete it (rabbitmqctl delete_queue ${this.queue}) or set COMMAND_QUEUE to another name.`
  }
}

export class TopologyDeclarationFailed extends Data.TaggedError("TopologyDeclarationFailed")<{
  readonly queue: string
  readonly cause: unknown
}> {
  override get message() {
    return `Could not declare queue "${this.queue}": ${String(this.cause)}`
  }
}

const PRECONDITION_FAILED = 406

const declareQueue = (channel: amqp.Channel, queue: string, args: Record<string, unknown>) =>
  Effect.tryPromise({
    try: () => channel.assertQueue(queue, { durable: true, arguments: args }),
    catch: (cause) =>
      (cause as { code?: number }).code === PRECONDITION_FAILED
        ? new TopologyMismatch({ queue, detail: String((cause as Error).message) })
        : new TopologyDeclarationFailed({ queue, cause })
  })

/**
 * Declares the dead-letter queue, then the command queue. A mismatch closes the channel (406);
 * callers open a fresh one before retrying.
 */
export const declareCommandTopology = Effect.fn("CommandTopology.declare")(
  function*(channel: amqp.Channel, commandQueue: string) {
    yield* declareQueue(channel, deadLetterQueueOf(commandQueue), { "x-queue-type": "quorum" })
    yield* declareQueue(channel, commandQueue, commandQueueArguments(commandQueue))
  }
)
