import { Args, Command, HelpDoc, Options, ValidationError } from "@effect/cli"
import { Console, Data, Effect, Exit, Option, Schema } from "effect"
import { SharedConfig } from "../config/SharedConfig"
import { OrderId } from "../domain/Order"
import { connectOnce } from "../messaging/AmqpConnection"
import type { PublishFailed } from "../messaging/ConfirmedPublisher"
import { type HeldDeadLetters, holdDeadLetters, type Released } from "../messaging/DeadLetterQueue"
import { deadLetterQueueOf } from "../messaging/QueueTopology"
import { EXIT_BAD_ARGUMENTS, writeLine } from "../runtime/runCli"
import {
  type DeadLetter,
  droppedLines,
  listJson,
  listSummary,
  listTable,
  notCommandsLine,
  oldestFirst,
  plural,
  readDeadLetter,
  replayedLines,
  type Settled
} from "./DeadLetterReport"

/** A command line the tool will not act on: a bad combination of arguments, or ids the queue does not hold. */
export class BadInvocation extends Data.TaggedError("BadInvocation")<{ readonly message: string }> {}

/** A replay the broker did not confirm: that order and those after it are still in the dead-letter queue. */
export class ReplayStopped extends Data.TaggedError("ReplayStopped")<{
  readonly orderId: string
  readonly queue: string
  readonly failure: PublishFailed
}> {
  override get message() {
    const perhapsQueued = this.failure.reason === "uncertain"
      ? " (its copy may have been queued all the same: a second replay may send it twice)"
      : ""
    return `Replay of ${this.orderId} failed (${this.failure.message}); it and the orders after it are still in ` +
      `${this.queue}${perhapsQueued}`
  }
}

const CONNECTION_NAME = "dlq-tool"

/** Says, on stderr, which worn messages could not be refreshed; they are back in the queue as they were. */
const reportRelease = (released: Released, queue: string) =>
  released.refreshFailures.length === 0
    ? Effect.void
    : writeLine(
      `Warning: ${plural(released.refreshFailures.length, "message")} given back to ${queue} many times could not be ` +
        `replaced by a fresh copy (${released.refreshFailures[0]!.message}); RabbitMQ 4.0 to 4.2 drop a message ` +
        "given back too often, so fix that before looking again"
    )

/**
 * Runs `use` on the dead-letter queue's messages (the first `limit`, or all), held for its length;
 * then gives back whatever it did not settle, whether it succeeded or not.
 */
const withDeadLetters = <A, E>(
  limit: number | undefined,
  use: (held: HeldDeadLetters, commandQueue: string) => Effect.Effect<A, E>
) =>
  Effect.scoped(Effect.gen(function*() {
    const { commandQueue, publishTimeout } = yield* SharedConfig
    const connection = yield* connectOnce(CONNECTION_NAME)
    const held = yield* holdDeadLetters(connection, deadLetterQueueOf(commandQueue), {
      limit,
      confirmTimeout: publishTimeout
    })
    const outcome = yield* Effect.exit(use(held, commandQueue))
    const release = Effect.flatMap(held.release, (released) => reportRelease(released, held.queue))
    // After a failure, that failure is what the operator needs to read, not a second one.
    yield* Exit.isSuccess(outcome) ? release : Effect.ignore(release)
    return yield* outcome
  }))

/** Valid commands by order id, oldest copy first (dead-lettering is at-least-once: one order, several copies). */
const copiesByOrder = (deadLetters: ReadonlyArray<DeadLetter>) => {
  const copies = new Map<string, Array<DeadLetter>>()
  for (const deadLetter of deadLetters) {
    if (deadLetter.orderId === undefined) continue
    const known = copies.get(deadLetter.orderId)
    if (known === undefined) copies.set(deadLetter.orderId, [deadLetter])
    else known.push(deadLetter)
  }
  return copies
}

/** All or nothing: an id the queue does not hold (a typo, already replayed) stops the whole command. */
const requireAll = (orderIds: ReadonlyArray<string>, held: ReadonlyMap<string, unknown>, queue: string, action: string) => {
  const missing = orderIds.filter((orderId) => !held.has(orderId))
  return missing.length === 0 ? Effect.void : Effect.fail(
    new BadInvocation({ message: `Not in ${queue}: ${missing.join(", ")}; nothing was ${action}` })
  )
}

const printLines = (lines: ReadonlyArray<string>) => Console.log(lines.join("\n"))

const list = (options: { readonly limit: number | undefined; readonly json: boolean }) =>
  withDeadLetters(options.limit, (held) => {
    const deadLetters = oldestFirst(held.messages.map(readDeadLetter))
    if (options.json) return Console.log(listJson(deadLetters))
    const summary = listSummary(deadLetters, held.total, held.queue)
    return printLines(deadLetters.length > 0 ? [listTable(deadLetters), summary] : [summary])
  })

const replay = (options: { readonly all: boolean; readonly orderIds: ReadonlyArray<string> }) =>
  Effect.gen(function*() {
    if (options.all && options.orderIds.length > 0) {
      return yield* new BadInvocation({ message: "replay takes either --all or ORDER_IDs, not both (see --help)" })
    }
    if (!options.all && options.orderIds.length === 0) {
      return yield* new BadInvocation({ message: "replay needs --all or at least one ORDER_ID (see --help)" })
    }
    return yield* withDeadLetters(undefined, (held, commandQueue) =>
      Effect.gen(function*() {
        const deadLetters = oldestFirst(held.messages.map(readDeadLetter))
        const byOrder = copiesByOrder(deadLetters)
        const chosen = options.all ? [...byOrder.keys()] : [...new Set(options.orderIds)]
        yield* requireAll(chosen, byOrder, held.queue, "replayed")
        const replayed: Array<Settled> = []
        // One copy per order is enough; the others go only once that one is confirmed.
        yield* Effect.forEach(chosen, (orderId) =>
          Effect.gen(function*() {
            const [first, ...duplicates] = byOrder.get(orderId)!
            yield* held.replay(first!.message, commandQueue).pipe(
              Effect.catchTag("PublishFailed", (failure) => new ReplayStopped({ orderId, queue: held.queue, failure }))
            )
            replayed.push({ orderId, copies: 1 + duplicates.length })
            yield* Effect.forEach(duplicates, (duplicate) => held.drop(duplicate.message), { discard: true })
          }), { discard: true }).pipe(
            // Whatever went wrong, say first what was done before it.
            Effect.tapError(() =>
              replayed.length > 0 ? printLines(replayedLines(replayed, held.queue, commandQueue)) : Effect.void
            )
          )
        const notCommands = deadLetters.filter((deadLetter) => deadLetter.orderId === undefined).length
        yield* printLines([
          ...replayedLines(replayed, held.queue, commandQueue),
          ...(options.all && notCommands > 0 ? [notCommandsLine(notCommands, held.queue, "left in")] : [])
        ])
      }))
  })

const drop = (options: { readonly poison: boolean; readonly orderIds: ReadonlyArray<string> }) =>
  Effect.gen(function*() {
    if (!options.poison && options.orderIds.length === 0) {
      return yield* new BadInvocation({ message: "drop needs at least one ORDER_ID, or --poison (see --help)" })
    }
    return yield* withDeadLetters(undefined, (held) =>
      Effect.gen(function*() {
        const deadLetters = oldestFirst(held.messages.map(readDeadLetter))
        const byOrder = copiesByOrder(deadLetters)
        const chosen = [...new Set(options.orderIds)]
        yield* requireAll(chosen, byOrder, held.queue, "dropped")
        const dropped: Array<Settled> = []
        for (const orderId of chosen) {
          const copies = byOrder.get(orderId)!
          yield* Effect.forEach(copies, (copy) => held.drop(copy.message), { discard: true })
          dropped.push({ orderId, copies: copies.length })
        }
        const notCommands = options.poison ? deadLetters.filter((deadLetter) => deadLetter.orderId === undefined) : []
        yield* Effect.forEach(notCommands, (notCommand) => held.drop(notCommand.message), { discard: true })
        yield* printLines([
          ...(chosen.length > 0 ? droppedLines(dropped, held.queue) : []),
          ...(options.poison ? [notCommandsLine(notCommands.length, held.queue, "dropped from")] : [])
        ])
      }))
  })

// The command line. Every value is checked here, so a bad one is one line and exit 2 before
// anything touches the broker.

const invalid = (message: string) => ValidationError.invalidValue(HelpDoc.p(message))

const isOrderId = Schema.is(OrderId)

const orderIds = Args.text({ name: "ORDER_ID" }).pipe(
  Args.mapEffect((raw) =>
    isOrderId(raw)
      ? Effect.succeed(raw.toLowerCase())
      : Effect.fail(HelpDoc.p(`ORDER_ID must be a UUID, the order's id (got ${JSON.stringify(raw)})`))
  ),
  Args.repeated,
  Args.withDescription("The order id (a UUID) of each dead-lettered command, as `dlq list` shows it.")
)

const limit = Options.text("limit").pipe(
  Options.withPseudoName("N"),
  Options.mapEffect((raw) => {
    const value = /^\d+$/.test(raw) ? Number(raw) : NaN
    return Number.isSafeInteger(value) && value >= 1
      ? Effect.succeed(value)
      : Effect.fail(invalid(`--limit must be a positive integer (got ${JSON.stringify(raw)})`))
  }),
  Options.optional,
  Options.withDescription(
    "Read only the first N messages of the queue (a positive integer); the last line then says how many it holds in all."
  )
)

const json = Options.boolean("json").pipe(
  Options.withDescription("Print a JSON array, one object per message, and nothing else on stdout.")
)

const all = Options.boolean("all").pipe(
  Options.withDescription("Replay every valid command in the queue; messages that are not valid commands stay.")
)

const poison = Options.boolean("poison").pipe(
  Options.withDescription("Also remove every message that is not a valid command (it would fail the same way again).")
)

const listCommand = Command.make(
  "list",
  { limit, json },
  (options) => list({ limit: Option.getOrUndefined(options.limit), json: options.json })
).pipe(Command.withDescription(
  "Show the dead-lettered commands, oldest first: order id, message id, attempts, when they first and last " +
    "failed, and why. Nothing leaves the queue."
))

const replayCommand = Command.make("replay", { all, orderIds }, replay).pipe(Command.withDescription(
  "Put dead-lettered commands back on COMMAND_QUEUE with fresh attempts: the given orders (every one must be in " +
    "the queue, or nothing is replayed), or --all. One copy per order; each leaves the dead-letter queue only once " +
    "the broker has confirmed its replay."
))

const dropCommand = Command.make("drop", { poison, orderIds }, drop).pipe(Command.withDescription(
  "Remove every copy of the given orders from the dead-letter queue (every one must be in the queue, or nothing " +
    "is removed); with --poison, also the messages that are not valid commands."
))

export const dlqCommand = Command.make("dlq", {}, () =>
  Effect.fail(new BadInvocation({ message: "Missing command: list, replay or drop (see --help)" }))).pipe(
    Command.withDescription(
      "The operator's tool for the dead-letter queue <COMMAND_QUEUE>.dlq, on the broker at AMQP_URL. " +
        "Exit code 0: done; 1: broker, configuration or queue trouble; 2: bad arguments, or ids not in the queue. " +
        "`dlq <command> --help` describes each command."
    ),
    Command.withSubcommands([listCommand, replayCommand, dropCommand])
  )

/** Exit 2 for what the operator fixes on the command line; 1 for the broker, the queue or the configuration. */
export const exitCodeOf = (error: unknown) => (error instanceof BadInvocation ? EXIT_BAD_ARGUMENTS : 1)
