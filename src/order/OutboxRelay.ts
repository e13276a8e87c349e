import type { SqlError } from "@effect/sql/SqlError"
import { Context, Data, Effect, ExecutionStrategy, Exit, Layer, Option, Queue, Schedule, Scope, Tracer } from "effect"
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
import { abandonAfter, type CreatedOrder, OrderStore, STORE_CALL_TIMEOUT } from "./store/OrderStore"

const APP_ID = "order-service"

/** Commands taken from the outbox at once; a full batch is followed at once by the next. */
const BATCH_SIZE = 500

/** Batches of handed-over commands waiting for their confirms at once. */
const BATCHES_IN_FLIGHT = 4

/** Handed-over commands held in memory at most; beyond that, the poll finds them in the outbox. */
const MAX_HANDED_OVER = 10 * BATCH_SIZE

/**
 * The safety net: the outbox is looked at this often even if nobody wakes the relay (commands a
 * dead replica left, whose lease has run out; a wake-up lost to a crash between commit and wake).
 */
const POLL_INTERVAL_MILLIS = 1000

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
 * orders `queued` once the broker has them. A command this process commits is handed over in
 * memory (`relayOnCommit`) and published at once, without reading it back, a few batches in flight
 * together; the poll claims from the outbox what is left (a failed publish, a dead replica's rows,
 * a wake-up lost to a crash) and is only the safety net.
 *
 * Not `@effect/sql`'s `SqlPersistedQueue`: it polls (no wake-up in process), hands out one element
 * per query, keeps completed rows, and creates its table outside our migrations.
 */
export class OutboxRelay extends Context.Tag("order/OutboxRelay")<OutboxRelay, {
  /**
   * Runs `commit`, which stores an order and its command; once it has stored a new one, the
   * command is counted and relayed now. Until then, the poll leaves the command alone.
   */
  readonly relayOnCommit: <E>(
    command: Omit<OutboxEntry, "createdAt">,
    commit: Effect.Effect<CreatedOrder, E>
  ) => Effect.Effect<CreatedOrder, E>
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
  // Committed by this process and handed over, waiting for a batch.
  const handedOver: Array<OutboxEntry> = []
  // Handed over, or about to be, and not settled yet: the poll's claims skip them.
  const inHand = new Set<string>()
  // Held by each batch in flight; a poll takes them all. Counted too: a semaphore does not tell.
  const inFlight = yield* Effect.makeSemaphore(BATCHES_IN_FLIGHT)
  let batchesInFlight = 0
  let lastPoll = 0
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
   * Publishes a batch and marks the confirmed ones queued; whatever is not confirmed stays in the
   * outbox for the poll. Uninterruptible: a batch stopped between its confirms and marking them
   * queued would leave commands the broker has in the outbox, and they would be published twice.
   * Each step is bounded (PUBLISH_TIMEOUT_MS for a confirm, STORE_CALL_TIMEOUT for a store call).
   */
  const relayEntries = (entries: ReadonlyArray<OutboxEntry>): Effect.Effect<void, SqlError | RelayIncomplete> =>
    Effect.uninterruptible(Effect.gen(function*() {
      const outcomes = yield* Effect.forEach(entries, (entry) => Effect.either(publish(entry)), { concurrency: "unbounded" })
      const confirmed = entries.filter((_, i) => outcomes[i]!._tag === "Right")
      if (confirmed.length > 0) {
        // Untraced, as are the claims: each publish has its span.
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
    }))

  /** One batch claimed from the outbox and relayed, once the batches in flight are done; whether a full one was claimed. */
  const pollBatch: Effect.Effect<boolean, SqlError | RelayIncomplete> = inFlight.withPermits(BATCHES_IN_FLIGHT)(
    Effect.gen(function*() {
      lastPoll = Date.now()
      const claimed = yield* abandonAfter(STORE_CALL_TIMEOUT)(store.claimOutbox(BATCH_SIZE)).pipe(Effect.withTracerEnabled(false))
      const fresh = claimed.filter((entry) => !inHand.has(entry.orderId))
      if (fresh.length > 0) yield* relayEntries(fresh)
      return claimed.length === BATCH_SIZE && fresh.length > 0
    })
  )

  const warnIncomplete = (error: SqlError | RelayIncomplete) => Effect.logWarning(`Outbox relay: ${error.message}; the poll retries`)

  /** Starts relaying handed-over commands, a batch at a time, while a batch may start. */
  const startHandedOver = Effect.gen(function*() {
    while (handedOver.length > 0 && batchesInFlight < BATCHES_IN_FLIGHT) {
      const entries = handedOver.splice(0, BATCH_SIZE)
      yield* inFlight.take(1)
      batchesInFlight++
      yield* relayEntries(entries).pipe(
        Effect.catchAll(warnIncomplete),
        Effect.catchAllDefect((defect) => Effect.logError("Outbox relay failed unexpectedly", defect)),
        Effect.ensuring(Effect.zipRight(
          Effect.sync(() => {
            batchesInFlight--
            entries.forEach((entry) => inHand.delete(entry.orderId))
            if (handedOver.length > 0) Queue.unsafeOffer(wakeUps, undefined)
          }),
          inFlight.release(1)
        )),
        Effect.forkIn(relayScope)
      )
    }
  })

  /** At shutdown: everything handed over, a batch at a time, then the outbox until a claim comes back short. */
  const drainBatches = Effect.gen(function*() {
    while (handedOver.length > 0) {
      const entries = handedOver.splice(0, BATCH_SIZE)
      yield* relayEntries(entries).pipe(Effect.ensuring(Effect.sync(() => entries.forEach((entry) => inHand.delete(entry.orderId)))))
    }
    yield* pollBatch.pipe(Effect.repeat({ while: (full) => full }))
  })

  const drainOutbox = pollBatch.pipe(
    Effect.repeat({ while: (full) => full }),
    Effect.tapError((error) => Effect.logWarning(`Outbox relay: ${error.message}; retrying with backoff`)),
    Effect.retry(relayBackoff)
  )
  // While the broker is away, handed-over commands wait in the outbox for the poll, with its backoff.
  const relayWhatIsDue = Effect.gen(function*() {
    if (!(yield* publisher.isReady)) {
      for (const entry of handedOver.splice(0)) inHand.delete(entry.orderId)
    }
    yield* startHandedOver
    // The poll skips what is in hand, so it never holds back the hand-over.
    if (Date.now() - lastPoll >= POLL_INTERVAL_MILLIS) yield* drainOutbox
  })
  const waitForWork = Queue.take(wakeUps).pipe(Effect.timeout(POLL_INTERVAL_MILLIS), Effect.ignore)
  // A defect (a bug, or a driver that throws) must not end the relay: it is logged, and the next
  // wake-up or poll tries again.
  const relayOnce = relayWhatIsDue.pipe(
    Effect.catchAllDefect((defect) => Effect.logError("Outbox relay failed unexpectedly; retrying", defect))
  )
  // Added before the loop is forked, so it runs after the loop has stopped: at shutdown, what was
  // committed up to the last request goes out now, if the broker takes it in time; what does not
  // stays in the outbox for the next start.
  yield* Effect.addFinalizer(() => drainBatches.pipe(atMost(shutdownTimeout)))
  // The batches in flight: closed before the finalizer above runs, which waits for them (they are uninterruptible).
  const relayScope = yield* Effect.scope.pipe(Effect.flatMap((scope) => Scope.fork(scope, ExecutionStrategy.sequential)))
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
  yield* Effect.forkScoped(Effect.repeat(countBacklog, Schedule.spaced(POLL_INTERVAL_MILLIS)))

  return OutboxRelay.of({
    relayOnCommit: (command, commit) =>
      Effect.suspend(() => {
        inHand.add(command.orderId)
        return Effect.onExit(commit, (exit) =>
          Effect.sync(() => {
            const stored = Exit.isSuccess(exit) && !exit.value.replayed
            if (stored && handedOver.length < MAX_HANDED_OVER) {
              handedOver.push({ ...command, createdAt: exit.value.order.createdAt })
            } else {
              inHand.delete(command.orderId)
            }
            if (stored) {
              sinceCount++
              Queue.unsafeOffer(wakeUps, undefined)
            }
          }))
      }),
    backlog: () => ({ pending: Math.max(0, counted.pending + sinceCount), oldestSeconds: counted.oldestSeconds }),
    brokerReady: publisher.isReady
  })
})

export const OutboxRelayLive = Layer.scoped(OutboxRelay, make)
