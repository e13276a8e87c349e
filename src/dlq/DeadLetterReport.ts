import type * as amqp from "amqplib"
import { Either } from "effect"
import { decodeCommand } from "../contracts/SendNotificationCommand"
import { readBrokerDeath, readStory } from "../messaging/FailureStory"

/** A dead-lettered message as the operator reads it: which order, why, after how many attempts, when. */
export interface DeadLetter {
  readonly message: amqp.GetMessage
  /** The command's order id (lower case); undefined for a message that is not a valid command. */
  readonly orderId: string | undefined
  readonly messageId: string | undefined
  readonly reason: string
  /** Who moved it here: our consumer (it carries its story), the broker by itself, or nobody knows. */
  readonly deadLetteredBy: "consumer" | "broker" | undefined
  /** Undefined when the message carries no story. */
  readonly attempts: number | undefined
  readonly firstFailedAt: Date | undefined
  readonly lastFailedAt: Date | undefined
  readonly originalQueue: string | undefined
}

/**
 * The story our consumer wrote into the headers; for a message the broker dead-lettered by itself,
 * what the broker recorded instead. Not its `x-delivery-count`: in the dead-letter queue that counts
 * the looks at it there, not the attempts made before.
 */
export const readDeadLetter = (message: amqp.GetMessage): DeadLetter => {
  const story = readStory(message)
  const death = readBrokerDeath(message)
  const decoded = decodeCommand(message.content)
  const messageId = message.properties.messageId
  const hasStory = story.reason !== undefined
  return {
    message,
    orderId: Either.isRight(decoded) ? decoded.right.orderId.toLowerCase() : undefined,
    messageId: typeof messageId === "string" && messageId !== "" ? messageId : undefined,
    reason: story.reason ?? death.reason ?? "unknown",
    deadLetteredBy: hasStory ? "consumer" : death.reason !== undefined ? "broker" : undefined,
    attempts: story.attempts > 0 ? story.attempts : undefined,
    firstFailedAt: story.firstFailedAt ?? death.firstDeadAt,
    lastFailedAt: story.lastFailedAt ?? death.lastDeadAt,
    originalQueue: story.originalQueue ?? death.queue
  }
}

/**
 * Oldest first: by when each was dead-lettered, those without a time last, in queue order otherwise.
 * Not queue order alone: a copy that took a worn message's place (see `holdDeadLetters`) is at the back.
 */
export const oldestFirst = (deadLetters: ReadonlyArray<DeadLetter>): ReadonlyArray<DeadLetter> =>
  deadLetters
    .map((deadLetter, position) => ({ deadLetter, position, at: deadLetter.lastFailedAt?.getTime() ?? Infinity }))
    .sort((a, b) => (a.at === b.at ? a.position - b.position : a.at < b.at ? -1 : 1))
    .map(({ deadLetter }) => deadLetter)

export const plural = (count: number, noun: string, nouns = `${noun}s`) => `${count} ${count === 1 ? noun : nouns}`

const NOT_A_COMMAND = "- (not a command)"

const oneLine = (text: string) => text.replace(/\s+/g, " ").trim()

/** The table `dlq list` prints: aligned columns, the reason last since it is the longest. */
export const listTable = (deadLetters: ReadonlyArray<DeadLetter>): string => {
  const header = ["ORDER ID", "MESSAGE ID", "ATTEMPTS", "FIRST FAILED", "LAST FAILED", "REASON"]
  const rows = deadLetters.map((deadLetter) => [
    deadLetter.orderId ?? NOT_A_COMMAND,
    deadLetter.messageId ?? "-",
    deadLetter.attempts === undefined ? "unknown" : String(deadLetter.attempts),
    deadLetter.firstFailedAt?.toISOString() ?? "-",
    deadLetter.lastFailedAt?.toISOString() ?? "-",
    oneLine(deadLetter.deadLetteredBy === "broker" ? `${deadLetter.reason} (by the broker)` : deadLetter.reason)
  ])
  const widths = header.map((_, column) => Math.max(...[header, ...rows].map((row) => row[column]!.length)))
  return [header, ...rows]
    .map((row) => row.map((cell, column) => cell.padEnd(widths[column]!)).join("  ").trimEnd())
    .join("\n")
}

/**
 * The last line of `dlq list`: how many messages the queue holds, how many were shown (with a
 * limit), and how many of those are not valid commands.
 */
export const listSummary = (shown: ReadonlyArray<DeadLetter>, total: number, queue: string): string => {
  const notCommands = shown.filter((deadLetter) => deadLetter.orderId === undefined).length
  const what = plural(total, notCommands > 0 ? "dead-lettered message" : "dead-lettered command")
  const counted = shown.length < total ? `showing ${shown.length} of ${what}` : what
  const invalid = notCommands > 0 ? ` (${plural(notCommands, "not a valid command", "not valid commands")})` : ""
  return `${counted} in ${queue}${invalid}`
}

/** What `dlq list --json` prints: one object per message, oldest first, times in ISO 8601 or null. */
export const listJson = (deadLetters: ReadonlyArray<DeadLetter>): string =>
  JSON.stringify(
    deadLetters.map((deadLetter) => ({
      orderId: deadLetter.orderId ?? null,
      validCommand: deadLetter.orderId !== undefined,
      messageId: deadLetter.messageId ?? null,
      reason: deadLetter.reason,
      deadLetteredBy: deadLetter.deadLetteredBy ?? null,
      attempts: deadLetter.attempts ?? null,
      firstFailedAt: deadLetter.firstFailedAt?.toISOString() ?? null,
      lastFailedAt: deadLetter.lastFailedAt?.toISOString() ?? null,
      originalQueue: deadLetter.originalQueue ?? null
    })),
    null,
    2
  )

/** An order that was replayed or dropped, and how many copies of it the dead-letter queue held. */
export interface Settled {
  readonly orderId: string
  readonly copies: number
}

const orderLines = (settled: ReadonlyArray<Settled>, extraCopies: (copies: number) => string) =>
  settled.map(({ copies, orderId }) => `  ${orderId}${copies > 1 ? `  ${extraCopies(copies)}` : ""}`)

export const replayedLines = (replayed: ReadonlyArray<Settled>, from: string, to: string): ReadonlyArray<string> => [
  `Replayed ${plural(replayed.length, "command")} from ${from} to ${to}${replayed.length > 0 ? ":" : ""}`,
  ...orderLines(replayed, (copies) =>
    `(and dropped ${plural(copies - 1, "duplicate copy", "duplicate copies")} once the replay was confirmed)`)
]

export const droppedLines = (dropped: ReadonlyArray<Settled>, from: string): ReadonlyArray<string> => {
  const messages = dropped.reduce((sum, { copies }) => sum + copies, 0)
  return [
    `Dropped ${plural(messages, "message")} of ${plural(dropped.length, "order")} from ${from}${dropped.length > 0 ? ":" : ""}`,
    ...orderLines(dropped, (copies) => `(${copies} copies)`)
  ]
}

export const notCommandsLine = (count: number, queue: string, done: "left in" | "dropped from") =>
  done === "left in"
    ? `Left ${plural(count, "message that is not a valid command", "messages that are not valid commands")} in ${queue} ` +
      "(dlq drop --poison removes them)"
    : `Dropped ${plural(count, "message that was not a valid command", "messages that were not valid commands")} from ${queue}`
