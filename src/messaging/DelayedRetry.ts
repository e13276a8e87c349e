import { Data, Effect, Random } from "effect"
import { Declaration } from "./QueueTopology"

/**
 * Retries that wait, in the broker rather than in the service: a failed message is moved to a
 * delay queue of its own delay, `<queue>.retry.<delay>ms`, whose message TTL dead-letters it back
 * to `<queue>` when it is due. Nothing waits in the consumer's memory, so a consumer that restarts
 * loses nothing, and this works on RabbitMQ 3.10 without plugins.
 *
 * One delay queue per delay, because a queue expires messages only at its head: a short delay
 * queued behind a long one would wait for the long one. Within one queue the waits differ only by
 * their jitter, so a message is held back by at most that.
 */
export interface RetryPolicy {
  /** Attempts in all, the first one included, before the message is given up on. */
  readonly maxAttempts: number
  /** The first delayed retry's wait, doubling for each later one; 0: every retry is immediate. */
  readonly firstDelayMillis: number
  /** The longest wait between two attempts. */
  readonly maxDelayMillis: number
}

/** What to do after attempt `n` failed. */
export type RetryDecision = Data.TaggedEnum<{
  /** Requeue at once (the first retry, and every retry when delays are off). */
  RetryNow: {}
  /** Wait `waitMillis` in the delay queue for `delayMillis`. */
  RetryLater: { readonly delayMillis: number; readonly waitMillis: number }
  /** That was the last attempt. */
  GiveUp: {}
}>
export const RetryDecision = Data.taggedEnum<RetryDecision>()

/**
 * Waits are jittered upwards by up to this fraction, so a crowd of messages that failed together
 * spreads out, and no message comes back before its nominal delay.
 */
const JITTER = 0.25

export const retryQueueOf = (queue: string, delayMillis: number) => `${queue}.retry.${delayMillis}ms`

/** The nominal wait before attempt `attempt + 1`, for the `retry`th delayed retry (1 for the first). */
const nominalDelay = (policy: RetryPolicy, retry: number) =>
  Math.min(policy.maxDelayMillis, policy.firstDelayMillis * 2 ** (retry - 1))

/** Attempt 1 fails: requeue at once. Attempt 2 and later: wait, doubling from the first delay. */
export const decideRetry = (policy: RetryPolicy, attempt: number): Effect.Effect<RetryDecision> => {
  if (attempt >= policy.maxAttempts) return Effect.succeed(RetryDecision.GiveUp())
  if (attempt <= 1 || policy.firstDelayMillis === 0) return Effect.succeed(RetryDecision.RetryNow())
  const delayMillis = nominalDelay(policy, attempt - 1)
  return Effect.map(Random.next, (draw) =>
    RetryDecision.RetryLater({
      delayMillis,
      waitMillis: Math.min(policy.maxDelayMillis, Math.round(delayMillis * (1 + JITTER * draw)))
    }))
}

/** The delays a policy can ask for, each a delay queue; none when every retry is immediate. */
export const delaysOf = (policy: RetryPolicy): ReadonlyArray<number> => {
  if (policy.firstDelayMillis === 0) return []
  const delays = new Set<number>()
  for (let retry = 1; retry <= policy.maxAttempts - 2; retry++) delays.add(nominalDelay(policy, retry))
  return [...delays]
}

/**
 * A delay queue: quorum, like the queue it feeds, with at-least-once dead-lettering back to it (a
 * crash while a message crosses over duplicates it rather than loses it; that strategy needs
 * `reject-publish` overflow). Its TTL is the longest jittered wait for its delay: each message's
 * own `expiration` says how long it waits, and the TTL is there only as the upper bound.
 */
export const retryQueueArguments = (queue: string, delayMillis: number) => ({
  "x-queue-type": "quorum",
  "x-message-ttl": Math.ceil(delayMillis * (1 + JITTER)),
  "x-dead-letter-exchange": "",
  "x-dead-letter-routing-key": queue,
  "x-dead-letter-strategy": "at-least-once",
  "x-overflow": "reject-publish"
})

/** The delay queues `policy` uses for `queue`. */
export const retryQueueTopology = (queue: string, policy: RetryPolicy): ReadonlyArray<Declaration> =>
  delaysOf(policy).map((delay) =>
    Declaration.Queue({ name: retryQueueOf(queue, delay), arguments: retryQueueArguments(queue, delay) })
  )
