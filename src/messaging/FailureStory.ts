import type * as amqp from "amqplib"
import type { PublishOptions } from "./ConfirmedPublisher"

/**
 * Why a message failed, carried in its own headers whenever the consumer moves it to another queue
 * (a delay queue, or the dead-letter queue), so that what an operator reads in the dead-letter
 * queue is the message's whole story, and the attempt count survives the trip through a delay.
 */
export const STORY_HEADERS = {
  reason: "x-failure-reason",
  /** Attempts made so far, all queues together. */
  attempts: "x-attempts",
  firstFailedAt: "x-first-failed-at",
  lastFailedAt: "x-last-failed-at",
  originalQueue: "x-original-queue"
} as const

/** When a command was replayed from the dead-letter queue (`npm run dlq -- replay`), in ISO 8601. */
export const REPLAYED_AT = "x-replayed-at"

/**
 * Headers the broker writes: delivery counts and dead-lettering history. A copy published by us
 * starts without them, or its own delivery count would be read from its predecessor's.
 */
const BROKER_HEADERS = [
  "x-delivery-count",
  "x-acquired-count",
  "x-death",
  "x-first-death-reason",
  "x-first-death-queue",
  "x-first-death-exchange",
  "x-last-death-reason",
  "x-last-death-queue",
  "x-last-death-exchange"
]

export interface FailureStory {
  readonly reason: string | undefined
  readonly attempts: number
  readonly firstFailedAt: Date | undefined
  readonly lastFailedAt: Date | undefined
  readonly originalQueue: string | undefined
}

const headersOf = (message: amqp.Message): Record<string, unknown> => message.properties.headers ?? {}

const text = (value: unknown) => (typeof value === "string" && value !== "" ? value : undefined)

const date = (value: unknown) => {
  const parsed = typeof value === "string" ? new Date(value) : undefined
  return parsed !== undefined && !Number.isNaN(parsed.getTime()) ? parsed : undefined
}

/** A non-negative integer header's value, 0 when it is missing or anything else. */
export const countHeader = (value: unknown): number => {
  const count = Number(value ?? 0)
  return Number.isSafeInteger(count) && count > 0 ? count : 0
}

/** The story a message carries; a message that never failed has none (0 attempts, nothing else). */
export const readStory = (message: amqp.Message): FailureStory => {
  const headers = headersOf(message)
  return {
    reason: text(headers[STORY_HEADERS.reason]),
    attempts: countHeader(headers[STORY_HEADERS.attempts]),
    firstFailedAt: date(headers[STORY_HEADERS.firstFailedAt]),
    lastFailedAt: date(headers[STORY_HEADERS.lastFailedAt]),
    originalQueue: text(headers[STORY_HEADERS.originalQueue])
  }
}

const withoutHeaders = (headers: Record<string, unknown>, names: ReadonlyArray<string>) => {
  const kept: Record<string, unknown> = {}
  for (const [name, value] of Object.entries(headers)) if (!names.includes(name)) kept[name] = value
  return kept
}

/**
 * The message's headers with its story brought up to date: `attempts` made in all, the latest
 * `reason`, and when. The first failure's time is kept from an earlier move; a message that has
 * only been requeued so far carries none, so it is `firstFailedAt`, as far as the caller knows it.
 */
export const withFailure = (
  message: amqp.Message,
  failure: { readonly reason: string; readonly attempts: number; readonly failedAt: Date; readonly queue: string },
  firstFailedAt: number
): Record<string, unknown> => {
  const failedAt = failure.failedAt.toISOString()
  return {
    ...withoutHeaders(headersOf(message), BROKER_HEADERS),
    [STORY_HEADERS.reason]: failure.reason,
    [STORY_HEADERS.attempts]: failure.attempts,
    [STORY_HEADERS.firstFailedAt]: (readStory(message).firstFailedAt ?? new Date(firstFailedAt)).toISOString(),
    [STORY_HEADERS.lastFailedAt]: failedAt,
    [STORY_HEADERS.originalQueue]: readStory(message).originalQueue ?? failure.queue
  }
}

/** The message's headers without any story or broker count: for a replay with fresh attempts. */
export const withoutStory = (message: amqp.Message): Record<string, unknown> =>
  withoutHeaders(headersOf(message), [...BROKER_HEADERS, ...Object.values(STORY_HEADERS)])

/**
 * What a copy of `message` is published with: its own properties and the given headers. Not its
 * `expiration` (a copy waits only as long as its new queue says) nor its `userId` (the broker
 * refuses a `userId` other than the publishing connection's user).
 */
export const copyOptions = (
  message: amqp.Message,
  headers: Record<string, unknown>,
  expiration?: number
): PublishOptions => {
  const { appId, contentEncoding, contentType, correlationId, deliveryMode, messageId, priority, replyTo, timestamp, type } =
    message.properties
  return {
    appId,
    contentEncoding,
    contentType,
    correlationId,
    deliveryMode,
    // A message without an id gets one of its own: a publish's return is matched by it.
    messageId: typeof messageId === "string" && messageId !== "" ? messageId : crypto.randomUUID(),
    priority,
    replyTo,
    timestamp,
    type,
    headers,
    ...(expiration === undefined ? {} : { expiration: String(expiration) })
  }
}

/**
 * The message's headers without the broker's delivery counts, everything else kept: for a copy
 * that takes the original's place in the same queue and should count its deliveries from zero.
 */
export const withoutDeliveryCounts = (message: amqp.Message): Record<string, unknown> =>
  withoutHeaders(headersOf(message), ["x-delivery-count", "x-acquired-count"])

/** What the broker recorded when it dead-lettered a message by itself, without a story of ours. */
export interface BrokerDeath {
  /** `rejected`, `expired`, `maxlen` or `delivery_limit`, as the broker names it. */
  readonly reason: string | undefined
  readonly queue: string | undefined
  readonly firstDeadAt: Date | undefined
  readonly lastDeadAt: Date | undefined
}

/** An `x-death` entry's time: an AMQP timestamp (seconds), which amqplib decodes as a typed value. */
const deathTime = (entry: unknown): Date | undefined => {
  const time = (entry as { readonly time?: unknown } | null)?.time
  const seconds = typeof time === "object" && time !== null ? Number((time as { readonly value?: unknown }).value) : Number(time)
  return Number.isFinite(seconds) && seconds > 0 ? new Date(seconds * 1000) : undefined
}

export const readBrokerDeath = (message: amqp.Message): BrokerDeath => {
  const headers = headersOf(message)
  const deaths = Array.isArray(headers["x-death"]) ? headers["x-death"] : []
  const times = deaths.map(deathTime).filter((time) => time !== undefined).map((time) => time.getTime())
  return {
    reason: text(headers["x-first-death-reason"]),
    queue: text(headers["x-first-death-queue"]),
    firstDeadAt: times.length > 0 ? new Date(Math.min(...times)) : undefined,
    lastDeadAt: times.length > 0 ? new Date(Math.max(...times)) : undefined
  }
}
