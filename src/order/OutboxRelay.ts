import type { SqlError } from "@effect/sql/SqlError"
import { Context, Data, Effect, Layer, Option, Queue, Schedule, Tracer } from "effect"
import { SharedConfig } from "../config/SharedConfig"
import { commandProperties } from "../contracts/SendNotificationCommand"
import { makeConfirmedPublisher } from "../messaging/ConfirmedPublisher"
import { workQueueTopology } from "../messaging/QueueTopology"
import { NO_LABELS } from "../observability/Metrics"
import { currentTraceHeaders, parseTraceparent, tracingEnabled } from "../observability/TraceContext"
import { atMost } from "../runtime/atMost"
import { backoff } from "../runtime/backoff"
import { eventsQueueTopology } from "./EventConsumer"
import { OrderConfig } from "./OrderConfig"
import { outboxLag, outboxOldestSeconds, outboxPending, relayFailed, relayPublished, statusTransitions, TO_QUEUED } from "./OrderMetrics"
import type { OutboxEntry } from "./store/OrderRecord"
import { abandonAfter, OrderStore, STORE_CALL_TIMEOUT } from "./store/OrderStore"

const APP_ID = "order-service"

/** Commands taken from the outbox at once; a full batch is followed at once by the next. */
const BATCH_SIZE = 500

/**
 * The safety net: the outbox is looked at this often even if nobody wakes the relay (commands a
 * dead replica left, whose lease has run out; a wake-up lost to a crash between commit and wake).
 */
const POLL_INTERVAL = "1 second"

/** While the broker or the store is away: 100 ms doubling, jittered, at most 5 s between tries. */
const relayBackoff = backoff("5 seconds")

class RelayIncomplete extends Data.TaggedError("RelayIncomplete")<{ readonly failed: number; readonly reason: string }> {
  override get message() {
    return `${this.failed} command(s) not confirmed by the broker (${this.reason}); they stay in the outbox`
  }
}

/** The outbox as last counted: pending commands and the age of the oldest, for every replica. */
export interface OutboxBacklog {
  readonly pending: number
  readonly oldestSeconds: number
}

/**
 * Relays committed commands from the outbox to the command queue, with confirms, and marks their
 * orders `queued` once the broker has them. Woken in process right after each commit, so a command
 * normally leaves within milliseconds; the poll is only the safety net.
 *
 * Not `@effect/sql`'s `SqlPersistedQueue`: it polls (no wake-up in process), hands out one element
 * per query, keeps completed rows, and creates its table outside our migrations.
 */
export class OutboxRelay extends Context.Tag("order/OutboxRelay")<OutboxRelay, {
  /** After an order's commit: count it, and relay it now. */
  readonly committed: () => void
  readonly backlog: () => OutboxBacklog
  /** Whether a confirm channel to the broker is open right now. */
  readonly brokerReady: Effect.Effect<boolean>
}>() {}

const make = Effect.gen(function*() {
  const store = yield* OrderStore
  const { commandQueue, publishTimeout, shutdownTimeout } = yield* SharedConfig
  const { eventsQueue } = yield* OrderConfig
  const tracing = yield* tracingEnabled
  const publisher = yield* makeConfirmedPublisher({
    // The events queue too, so that it exists before the first command can produce an event.
    topology: [...workQueueTopology(commandQueue), ...eventsQueueTopology(eventsQueue)],
    confirmTimeout: publishTimeout
  })
  const wakeUps = yield* Queue.sliding<void>(1)
  // Counted from the store at every poll, and kept current in between by this replica's own commits
  // and confirms (other replicas' show at the next count).
  let counted: OutboxBacklog = { pending: 0, oldestSeconds: 0 }
  let sinceCount = 0

  const publishEntry = (entry: OutboxEntry) =>
    Effect.flatMap(currentTraceHeaders, (traceHeaders) =>
      publisher.publish(
        "",
        commandQueue,
        Buffer.from(entry.body),
        commandProperties(entry.orderId, APP_ID, traceHeaders ?? entry.headers)
      ))

  // With tracing on, each publish continues the trace of the request that stored it.
  const publishTraced = (entry: OutboxEntry) => {
    const parent = parseTraceparent(entry.headers?.["traceparent"])
    return publishEntry(entry).pipe(Effect.withSpan("OutboxRelay.publish", {
      kind: "producer",
      captureStackTrace: false,
      ...(Option.isSome(parent) ? { parent: parent.value as Tracer.AnySpan } : { root: true }),
      attributes: {
        "messaging.system": "rabbitmq",
        "messaging.operation.type": "send",
        "messaging.destination.name": commandQueue,
        "messaging.message.id": entry.orderId
      }
    }))
  }
  const publish = tracing ? publishTraced : publishEntry

  /**
   * One batch: claimed, published, and the confirmed ones marked queued; how many were claimed.
   * Uninterruptible: a batch stopped between its confirms and marking them queued would leave
   * commands the broker has in the outbox, and they would be published twice. Each step is bounded
   * (PUBLISH_TIMEOUT_MS for a confirm, STORE_CALL_TIMEOUT for a store call).
   */
  const relayBatch: Effect.Effect<number, SqlError | RelayIncomplete> = Effect.uninterruptible(Effect.gen(function*() {
    // Untraced, as is marking them queued: most claims (the poll's) find nothing; each publish has its span.
    const entries = yield* abandonAfter(STORE_CALL_TIMEOUT)(store.claimOutbox(BATCH_SIZE)).pipe(Effect.withTracerEnabled(false))
    if (entries.length === 0) return 0
    const outcomes = yield* Effect.forEach(entries, (entry) => Effect.either(publish(entry)), { concurrency: "unbounded" })
    const confirmed = entries.filter((_, i) => outcomes[i]!._tag === "Right")
    if (confirmed.length > 0) {
      yield* abandonAfter(STORE_CALL_TIMEOUT)(store.markQueued(confirmed.map((entry) => entry.orderId))).pipe(
        Effect.withTracerEnabled(false)
      )
      const now = Date.now()
      for (const entry of confirmed) outboxLag.unsafeUpdate((now - entry.createdAt.getTime()) / 1000, NO_LABELS)
      relayPublished.unsafeUpdate(confirmed.length, NO_LABELS)
      statusTransitions.unsafeUpdate(confirmed.length, TO_QUEUED)
      sinceCount -= confirmed.length
    }
    const failures = outcomes.flatMap((outcome) => (outcome._tag === "Left" ? [outcome.left] : []))
    if (failures.length > 0) {
      relayFailed.unsafeUpdate(failures.length, NO_LABELS)
      return yield* new RelayIncomplete({ failed: failures.length, reason: failures[0]!.message })
    }
    return entries.length
  }))

  const drainBatches = relayBatch.pipe(Effect.repeat({ while: (claimed) => claimed === BATCH_SIZE }))
  const drainOutbox = drainBatches.pipe(
    Effect.tapError((error) => Effect.logWarning(`Outbox relay: ${error.message}; retrying with backoff`)),
    Effect.retry(relayBackoff)
  )
  const waitForWork = Queue.take(wakeUps).pipe(Effect.timeout(POLL_INTERVAL), Effect.ignore)
  // A defect (a bug, or a driver that throws) must not end the relay: it is logged, and the next
  // wake-up or poll tries again.
  const relayOnce = drainOutbox.pipe(
    Effect.catchAllDefect((defect) => Effect.logError("Outbox relay failed unexpectedly; retrying", defect))
  )
  // Added before the loop is forked, so it runs after the loop has stopped (between batches): at
  // shutdown, what was committed up to the last request goes out now, if the broker takes it in
  // time; what does not stays in the outbox for the next start.
  yield* Effect.addFinalizer(() => drainBatches.pipe(atMost(shutdownTimeout)))
  yield* Effect.forkScoped(Effect.forever(Effect.zipRight(relayOnce, waitForWork)))

  const countBacklog = store.outboxStats.pipe(
    Effect.flatMap(({ oldestCreatedAt, pending }) => {
      const oldestSeconds = Option.match(oldestCreatedAt, {
        onNone: () => 0,
        onSome: (createdAt) => Math.max(0, (Date.now() - createdAt.getTime()) / 1000)
      })
      counted = { pending, oldestSeconds }
      sinceCount = 0
      outboxPending.unsafeUpdate(pending, NO_LABELS)
      outboxOldestSeconds.unsafeUpdate(oldestSeconds, NO_LABELS)
      // Rows this replica holds but could not publish yet stay out of other replicas' reach, unless
      // it has lost the broker: then its claims lapse, and a replica that can publish takes them.
      return pending > 0 ? Effect.whenEffect(store.renewClaims, publisher.isReady) : Effect.void
    }),
    Effect.catchAll((error) => Effect.logWarning(`Could not count the outbox: ${error.message}`)),
    // Housekeeping every second would make a trace of its own every second.
    Effect.withTracerEnabled(false)
  )
  yield* Effect.forkScoped(Effect.repeat(countBacklog, Schedule.spaced(POLL_INTERVAL)))

  return OutboxRelay.of({
    committed: () => {
      sinceCount++
      Queue.unsafeOffer(wakeUps, undefined)
    },
    backlog: () => ({ pending: Math.max(0, counted.pending + sinceCount), oldestSeconds: counted.oldestSeconds }),
    brokerReady: publisher.isReady
  })
})

export const OutboxRelayLive = Layer.scoped(OutboxRelay, make)
