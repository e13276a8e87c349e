import * as SqlClient from "@effect/sql/SqlClient"
import { SqlError } from "@effect/sql/SqlError"
import * as SqlSchema from "@effect/sql/SqlSchema"
import { Clock, Context, Data, Deferred, Duration, Effect, Exit, Option, ParseResult, Queue, Schema } from "effect"
import { randomUUID } from "node:crypto"
import { OrderId, UserId } from "../../domain/Order"
import { IdempotencyKeyReused, OrderRecord, OrderStatus, OutboxEntry } from "./OrderRecord"

/**
 * How long a relay's claim on outbox rows lasts. The replica that stored a command relays it
 * itself; another replica takes it only once the claim has lapsed, because its owner died or
 * stalled (the owner renews its claims while it still holds rows). Times come from each
 * replica's own clock, so the lease also has to absorb the clock skew between replicas.
 */
export class OutboxLease extends Context.Reference<OutboxLease>()("order/OutboxLease", {
  defaultValue: (): Duration.Duration => Duration.seconds(10)
}) {}

export interface NewOrder {
  readonly orderId: OrderId
  readonly userId: UserId
  /** The command, as it will be published. */
  readonly body: string
  readonly headers: Record<string, string> | undefined
  readonly idempotency: Option.Option<{ readonly key: string; readonly requestHash: string }>
  /** Only a replay may be answered (the outbox is full): a new order fails with `NewOrderRefused`. */
  readonly replayOnly?: boolean
}

/** `replayOnly` was asked and the request is not a replay: nothing was stored. */
export class NewOrderRefused extends Data.TaggedError("NewOrderRefused") {}

export interface CreatedOrder {
  readonly order: OrderRecord
  /** The key was used before with the same request: this is that request's order. */
  readonly replayed: boolean
}

export type EventOutcome = "applied" | "duplicate" | "unknownOrder"

/** An integer column: node-postgres returns BIGINT (and COUNT) as a string, SQLite as a number. */
const DbInt = Schema.Union(Schema.Int, Schema.NumberFromString.pipe(Schema.int()))
/** Times are stored as epoch milliseconds. */
const DbDate = DbInt.pipe(Schema.compose(Schema.DateFromNumber))

const OrderRow = Schema.transform(
  Schema.Struct({
    order_id: OrderId,
    user_id: DbInt.pipe(Schema.compose(UserId)),
    status: OrderStatus,
    created_at: DbDate,
    updated_at: DbDate,
    queued_at: Schema.NullOr(DbDate),
    notified_at: Schema.NullOr(DbDate),
    notifications: DbInt,
    failure_reason: Schema.NullOr(Schema.String),
    failure_attempts: Schema.NullOr(DbInt),
    failed_at: Schema.NullOr(DbDate)
  }),
  Schema.typeSchema(OrderRecord),
  {
    strict: true,
    decode: (row) => ({
      orderId: row.order_id,
      userId: row.user_id,
      status: row.status,
      createdAt: row.created_at,
      updatedAt: row.updated_at,
      queuedAt: Option.fromNullable(row.queued_at),
      notifiedAt: Option.fromNullable(row.notified_at),
      notifications: row.notifications,
      // The three columns are written together.
      failure: row.failure_reason === null || row.failure_attempts === null || row.failed_at === null
        ? Option.none()
        : Option.some({ reason: row.failure_reason, attempts: row.failure_attempts, failedAt: row.failed_at })
    }),
    encode: (order) => ({
      order_id: order.orderId,
      user_id: order.userId,
      status: order.status,
      created_at: order.createdAt,
      updated_at: order.updatedAt,
      queued_at: Option.getOrNull(order.queuedAt),
      notified_at: Option.getOrNull(order.notifiedAt),
      notifications: order.notifications,
      failure_reason: Option.getOrNull(Option.map(order.failure, (f) => f.reason)),
      failure_attempts: Option.getOrNull(Option.map(order.failure, (f) => f.attempts)),
      failed_at: Option.getOrNull(Option.map(order.failure, (f) => f.failedAt))
    })
  }
)

const Headers = Schema.Record({ key: Schema.String, value: Schema.String })

const OutboxRow = Schema.transform(
  Schema.Struct({
    order_id: OrderId,
    body: Schema.String,
    headers: Schema.NullOr(Schema.parseJson(Headers)),
    created_at: DbDate
  }),
  Schema.typeSchema(OutboxEntry),
  {
    strict: true,
    decode: (row) => ({ orderId: row.order_id, body: row.body, headers: row.headers ?? undefined, createdAt: row.created_at }),
    encode: (entry) => ({ order_id: entry.orderId, body: entry.body, headers: entry.headers ?? null, created_at: entry.createdAt })
  }
)

const KeyRow = Schema.Struct({ request_hash: Schema.String, order_id: OrderId })

const StatsRow = Schema.Struct({ pending: DbInt, oldest: Schema.NullOr(DbDate) })

/** The key's order is not visible to this transaction yet: try again in a new one. */
class KeyedOrderNotVisible extends Data.TaggedError("KeyedOrderNotVisible") {}

// A row that does not decode is a bug in this file, not a failure for callers to handle.
const dieOnParseError = <A, E, R>(effect: Effect.Effect<A, E | ParseResult.ParseError, R>) =>
  Effect.catchIf(effect, ParseResult.isParseError, (error) => Effect.die(error))

// Stored ids are lowercase (makeOrderId); a UUID from outside may be in either case.
const normalise = (orderId: OrderId) => orderId.toLowerCase()

/**
 * For the background callers (the relay, the event consumer): a store call that has not answered by
 * then is abandoned, left to finish or fail on its own, so that the caller can try again. A
 * connection cut off without a reset leaves its query unanswered until TCP gives up, and the
 * caller would wait that long.
 */
export const STORE_CALL_TIMEOUT = Duration.seconds(10)

export const abandonAfter = (duration: Duration.Duration) => <A>(call: Effect.Effect<A, SqlError>) =>
  call.pipe(
    Effect.disconnect,
    Effect.timeoutFail({
      duration,
      onTimeout: () => new SqlError({ message: `The order store did not answer within ${Duration.format(duration)}` })
    })
  )

/** Resumes once Node has handled the I/O that is ready now (`setImmediate` runs after the poll phase). */
const afterThisTurn = Effect.async<void>((resume) => {
  const immediate = setImmediate(() => resume(Effect.void))
  return Effect.sync(() => clearImmediate(immediate))
})

/** Orders stored in one group commit at most; within SQLite's and PostgreSQL's limits on bound parameters. */
const MAX_GROUP = 500
/** Groups in flight at once on PostgreSQL. */
const POSTGRES_WRITERS = 4

interface WaitingOrder {
  readonly input: NewOrder
  /** When its request came. */
  readonly now: number
  /** Done once it is stored, or failed with why not. */
  readonly stored: Deferred.Deferred<void, SqlError>
}

/**
 * The order store: orders, their commands waiting in the outbox (transactional outbox),
 * idempotency keys and the events applied, over the SQL client of `Database.ts`.
 */
export class OrderStore extends Effect.Service<OrderStore>()("order/OrderStore", {
  scoped: Effect.gen(function*() {
    const sql = yield* SqlClient.SqlClient
    /**
     * A transaction whose failed COMMIT or ROLLBACK (the connection lost mid-way) is the SqlError it
     * is: `withTransaction` makes it a defect, which no caller's retry would see.
     */
    const inTransaction = <A, E, R>(effect: Effect.Effect<A, E, R>) =>
      sql.withTransaction(effect).pipe(
        Effect.catchAllDefect((defect) => (defect instanceof SqlError ? Effect.fail(defect) : Effect.die(defect)))
      )
    const lease = Duration.toMillis(yield* OutboxLease)
    /** This process's relay id: the owner of the outbox rows it claims. */
    const owner = randomUUID()

    const findOrderRow = SqlSchema.findOne({
      Request: Schema.String,
      Result: OrderRow,
      execute: (orderId) => sql`SELECT * FROM orders WHERE order_id = ${orderId}`
    })

    const findKey = SqlSchema.findOne({
      Request: Schema.String,
      Result: KeyRow,
      execute: (key) => sql`SELECT request_hash, order_id FROM idempotency_keys WHERE idempotency_key = ${key}`
    })

    /** The order a key already names, or why it does not answer this request. */
    const replay = (key: string, requestHash: string) =>
      Effect.gen(function*() {
        const existing = yield* findKey(key)
        // Deleted by the expiry since our INSERT met it: rare, and a new transaction will take the key.
        if (Option.isNone(existing)) return yield* new KeyedOrderNotVisible()
        if (existing.value.request_hash !== requestHash) {
          return yield* new IdempotencyKeyReused({
            key,
            message: `The Idempotency-Key ${JSON.stringify(key)} was already used with a different request`
          })
        }
        const order = yield* findOrderRow(existing.value.order_id)
        if (Option.isNone(order)) return yield* new KeyedOrderNotVisible()
        return { order: order.value, replayed: true }
      })

    /** An order's row as it is first stored: accepted, at `now`. */
    const orderRow = (input: NewOrder, now: number) => ({
      order_id: input.orderId,
      user_id: input.userId,
      status: "accepted" satisfies OrderStatus,
      created_at: now,
      updated_at: now,
      notifications: 0
    })
    // Claimed by this replica from the start: other relays leave it alone while the lease runs.
    const outboxRow = (input: NewOrder, now: number) => ({
      order_id: input.orderId,
      body: input.body,
      headers: input.headers === undefined ? null : JSON.stringify(input.headers),
      created_at: now,
      claimed_by: owner,
      claimed_until: now + lease
    })
    const acceptedOrder = (input: NewOrder, now: number): CreatedOrder => ({
      order: {
        orderId: input.orderId,
        userId: input.userId,
        status: "accepted",
        createdAt: new Date(now),
        updatedAt: new Date(now),
        queuedAt: Option.none(),
        notifiedAt: Option.none(),
        notifications: 0,
        failure: Option.none()
      },
      replayed: false
    })

    /** Orders and their commands, each stored at the time its request came, in one transaction. */
    const insertOrders = (orders: ReadonlyArray<WaitingOrder>): Effect.Effect<void, SqlError> =>
      inTransaction(Effect.zipRight(
        sql`INSERT INTO orders ${sql.insert(orders.map((order) => orderRow(order.input, order.now)))}`,
        sql`INSERT INTO outbox ${sql.insert(orders.map((order) => outboxRow(order.input, order.now)))}`
      ))

    /**
     * Group commit: the orders without a key that arrive while a transaction is running are stored
     * together in the next one, so that each order does not wait its turn for the connection and
     * pay for a transaction of its own. Hand-written because `SqlResolver` batches the requests of
     * one fiber, and every HTTP request is a fiber of its own.
     */
    const waiting = yield* Queue.unbounded<WaitingOrder>()
    const commitGroup = (group: ReadonlyArray<WaitingOrder>) =>
      Effect.gen(function*() {
        const exit = yield* Effect.exit(insertOrders(group))
        if (Exit.isSuccess(exit) || group.length === 1) {
          for (const order of group) yield* Deferred.done(order.stored, exit)
          return
        }
        // The database may have refused one order only: each alone now, so that only that one fails.
        yield* Effect.forEach(
          group,
          (order) => Effect.flatMap(Effect.exit(insertOrders([order])), (alone) => Deferred.done(order.stored, alone)),
          { discard: true }
        )
      })
    const closing = () => new SqlError({ message: "The order store is closing; nothing was stored" })
    let closed = false
    // Added before the writers start, so it runs once they have stopped.
    yield* Effect.addFinalizer(() =>
      Effect.suspend(() => {
        closed = true
        return Effect.flatMap(Queue.takeAll(waiting), (left) =>
          Effect.forEach(left, (order) => Deferred.fail(order.stored, closing()), { discard: true }))
      }))
    // PostgreSQL has a pool: a few groups in flight at once. SQLite has one connection.
    const writers = sql.onDialectOrElse({ pg: () => POSTGRES_WRITERS, orElse: () => 1 })
    // The first order waits for the rest of this event-loop turn, so that the requests read with it join its group.
    const nextGroup = Effect.flatMap(Queue.take(waiting), (first) =>
      Effect.zipRight(
        afterThisTurn,
        Effect.map(Queue.takeUpTo(waiting, MAX_GROUP - 1), (rest) => [first, ...rest])
      ))
    for (let i = 0; i < writers; i++) {
      yield* nextGroup.pipe(
        // A group taken is committed and answered, even at shutdown.
        Effect.flatMap((group) => Effect.uninterruptible(commitGroup(group))),
        Effect.forever,
        Effect.forkScoped
      )
    }

    const createGroupCommitted = (input: NewOrder) =>
      Effect.gen(function*() {
        if (closed) return yield* Effect.fail(closing())
        const now = yield* Clock.currentTimeMillis
        const stored = yield* Deferred.make<void, SqlError>()
        yield* Queue.offer(waiting, { input, now, stored })
        yield* Deferred.await(stored)
        return acceptedOrder(input, now)
      })

    /** An order with an `Idempotency-Key`: a transaction of its own, since the key may name an earlier order. */
    const createKeyed = (input: NewOrder, idempotency: { readonly key: string; readonly requestHash: string }) =>
      inTransaction(Effect.gen(function*() {
        const now = yield* Clock.currentTimeMillis
        const { key, requestHash } = idempotency
        // On PostgreSQL a concurrent INSERT of the same key waits here until the first
        // transaction ends, then inserts nothing; the next statement sees what it committed.
        const taken = yield* sql`INSERT INTO idempotency_keys ${
          sql.insert({ idempotency_key: key, request_hash: requestHash, order_id: input.orderId, created_at: now })
        } ON CONFLICT (idempotency_key) DO NOTHING RETURNING idempotency_key`
        if (taken.length === 0) return yield* replay(key, requestHash)
        // Failing rolls the key back too.
        if (input.replayOnly === true) return yield* new NewOrderRefused()
        yield* sql`INSERT INTO orders ${sql.insert(orderRow(input, now))}`
        yield* sql`INSERT INTO outbox ${sql.insert(outboxRow(input, now))}`
        return acceptedOrder(input, now)
      })).pipe(
        Effect.retry({ times: 3, while: (error) => error._tag === "KeyedOrderNotVisible" }),
        Effect.catchTag("KeyedOrderNotVisible", () =>
          Effect.dieMessage(`The order of Idempotency-Key ${JSON.stringify(idempotency.key)} stayed invisible`)),
        dieOnParseError
      )

    const createOrder = (input: NewOrder): Effect.Effect<CreatedOrder, SqlError | IdempotencyKeyReused | NewOrderRefused> =>
      Option.match(input.idempotency, {
        onSome: (idempotency) => createKeyed(input, idempotency),
        // Without a key nothing can be a replay.
        onNone: () => input.replayOnly === true ? Effect.fail(new NewOrderRefused()) : createGroupCommitted(input)
      }).pipe(Effect.withSpan("OrderStore.createOrder"))

    const findOrder = (orderId: OrderId): Effect.Effect<Option.Option<OrderRecord>, SqlError> =>
      findOrderRow(normalise(orderId)).pipe(dieOnParseError, Effect.withSpan("OrderStore.findOrder"))

    const listOrdersQuery = SqlSchema.findAll({
      Request: Schema.Struct({ userId: UserId, limit: Schema.Int, before: Schema.OptionFromSelf(Schema.String) }),
      Result: OrderRow,
      execute: ({ before, limit, userId }) =>
        sql`SELECT * FROM orders WHERE ${
          sql.and([
            sql`user_id = ${userId}`,
            ...Option.toArray(Option.map(before, (orderId) => sql`order_id < ${orderId}`))
          ])
        } ORDER BY order_id DESC LIMIT ${limit}`
    })

    /** A user's orders, newest first (UUIDv7 ids sort by creation time), `before` excluded. */
    const listOrders = (
      input: { readonly userId: UserId; readonly limit: number; readonly before: Option.Option<OrderId> }
    ): Effect.Effect<ReadonlyArray<OrderRecord>, SqlError> =>
      listOrdersQuery({ ...input, before: Option.map(input.before, normalise) }).pipe(
        dieOnParseError,
        Effect.withSpan("OrderStore.listOrders")
      )

    const decodeOutbox = Schema.decodeUnknown(Schema.Array(OutboxRow))

    /**
     * Claims up to `limit` commands to relay, oldest first, for one lease. A single UPDATE, so
     * atomic. Rows this owner holds already are returned again: a relay claims its next batch
     * once the previous one is settled.
     */
    const claimOutbox = Effect.fn("OrderStore.claimOutbox")(function*(
      limit: number
    ): Effect.fn.Return<ReadonlyArray<OutboxEntry>, SqlError> {
      if (limit <= 0) return []
      const now = yield* Clock.currentTimeMillis
      const claimable = sql.onDialectOrElse({
        // Replicas share the outbox: each takes its own rows and those whose claim has lapsed,
        // skipping rows another replica is claiming at this very moment.
        pg: () =>
          sql`SELECT order_id FROM outbox
            WHERE claimed_by = ${owner} OR claimed_until IS NULL OR claimed_until < ${now}
            ORDER BY created_at, order_id LIMIT ${limit} FOR UPDATE SKIP LOCKED`,
        // One process per file (Database.ts): any other claim was made by a predecessor that is gone.
        orElse: () => sql`SELECT order_id FROM outbox ORDER BY created_at, order_id LIMIT ${limit}`
      })
      const rows = yield* sql`UPDATE outbox SET claimed_by = ${owner}, claimed_until = ${now + lease}
        WHERE order_id IN (${claimable})
        RETURNING order_id, body, headers, created_at`
      const entries = yield* decodeOutbox(rows).pipe(dieOnParseError)
      // RETURNING follows no order.
      return [...entries].sort((a, b) =>
        a.createdAt.getTime() - b.createdAt.getTime() || (a.orderId < b.orderId ? -1 : a.orderId > b.orderId ? 1 : 0)
      )
    })

    /** Extends this owner's claims, while it holds commands it could not publish yet. */
    const renewClaims: Effect.Effect<void, SqlError> = Effect.flatMap(Clock.currentTimeMillis, (now) =>
      sql`UPDATE outbox SET claimed_until = ${now + lease} WHERE claimed_by = ${owner}`).pipe(
        Effect.asVoid,
        Effect.withSpan("OrderStore.renewClaims")
      )

    /** The broker confirmed these commands: out of the outbox, and their orders `queued`. */
    const markQueued = (orderIds: ReadonlyArray<OrderId>): Effect.Effect<void, SqlError> =>
      orderIds.length === 0 ? Effect.void : Effect.gen(function*() {
        const now = yield* Clock.currentTimeMillis
        yield* sql`DELETE FROM outbox WHERE ${sql.in("order_id", orderIds)}`
        // An order already notified or failed keeps its status; it still learns when it was queued.
        yield* sql`UPDATE orders SET
            status = CASE WHEN status = 'accepted' THEN 'queued' ELSE status END,
            queued_at = COALESCE(queued_at, ${now}),
            updated_at = ${now}
          WHERE ${sql.in("order_id", orderIds)} AND (status = 'accepted' OR queued_at IS NULL)`
      }).pipe(inTransaction, Effect.withSpan("OrderStore.markQueued"))

    const outboxStatsQuery = SqlSchema.findAll({
      Request: Schema.Void,
      Result: StatsRow,
      execute: () => sql`SELECT COUNT(*) AS pending, MIN(created_at) AS oldest FROM outbox`
    })

    const outboxStats: Effect.Effect<{ readonly pending: number; readonly oldestCreatedAt: Option.Option<Date> }, SqlError> =
      outboxStatsQuery(undefined).pipe(
        Effect.map(([row]) => ({ pending: row?.pending ?? 0, oldestCreatedAt: Option.fromNullable(row?.oldest) })),
        dieOnParseError,
        Effect.withSpan("OrderStore.outboxStats")
      )

    /** Records an event once per event id; what an applied event does is `update`'s. */
    const applyEvent = (
      event: { readonly eventId: string; readonly orderId: OrderId },
      type: "NotificationSent" | "NotificationFailed",
      update: (orderId: string, now: number) => Effect.Effect<unknown, SqlError>
    ): Effect.Effect<EventOutcome, SqlError> =>
      Effect.gen(function*() {
        const orderId = normalise(event.orderId)
        const now = yield* Clock.currentTimeMillis
        const known = yield* sql`SELECT order_id FROM orders WHERE order_id = ${orderId}`
        if (known.length === 0) return "unknownOrder" as const
        const recorded = yield* sql`INSERT INTO order_events ${
          sql.insert({ event_id: event.eventId, order_id: orderId, type, received_at: now })
        } ON CONFLICT (event_id) DO NOTHING RETURNING event_id`
        if (recorded.length === 0) return "duplicate" as const
        yield* update(orderId, now)
        return "applied" as const
      }).pipe(inTransaction)

    /** `notified` is the top rank, so it always applies; `notified_at` keeps the earliest send. */
    const applyNotificationSent = (
      event: { readonly eventId: string; readonly orderId: OrderId; readonly sentAt: Date }
    ): Effect.Effect<EventOutcome, SqlError> => {
      const sentAt = event.sentAt.getTime()
      return applyEvent(event, "NotificationSent", (orderId, now) =>
        sql`UPDATE orders SET
            notifications = notifications + 1,
            status = 'notified',
            notified_at = CASE WHEN notified_at IS NULL OR notified_at > ${sentAt} THEN ${sentAt} ELSE notified_at END,
            updated_at = ${now}
          WHERE order_id = ${orderId}`).pipe(Effect.withSpan("OrderStore.applyNotificationSent"))
    }

    /**
     * `failed` outranks only `accepted` and `queued`: a notified order stays notified. The failure
     * is recorded in any case (the order's story: it failed, then a replay was sent), and of
     * several failures the latest by `failedAt` is kept, whatever order they arrive in.
     */
    const applyNotificationFailed = (
      event: {
        readonly eventId: string
        readonly orderId: OrderId
        readonly reason: string
        readonly attempts: number
        readonly failedAt: Date
      }
    ): Effect.Effect<EventOutcome, SqlError> => {
      const failedAt = event.failedAt.getTime()
      return applyEvent(event, "NotificationFailed", (orderId, now) =>
        sql`UPDATE orders SET
            status = CASE WHEN status IN ('accepted', 'queued') THEN 'failed' ELSE status END,
            failure_reason = CASE WHEN failed_at IS NULL OR failed_at <= ${failedAt} THEN ${event.reason} ELSE failure_reason END,
            failure_attempts = CASE WHEN failed_at IS NULL OR failed_at <= ${failedAt} THEN ${event.attempts} ELSE failure_attempts END,
            failed_at = CASE WHEN failed_at IS NULL OR failed_at <= ${failedAt} THEN ${failedAt} ELSE failed_at END,
            updated_at = ${now}
          WHERE order_id = ${orderId}`).pipe(Effect.withSpan("OrderStore.applyNotificationFailed"))
    }

    /** Forgets the keys created before `olderThan`; returns how many. */
    const expireIdempotencyKeys = (olderThan: Date): Effect.Effect<number, SqlError> =>
      sql`DELETE FROM idempotency_keys WHERE created_at < ${olderThan.getTime()} RETURNING idempotency_key`.pipe(
        Effect.map((rows) => rows.length),
        Effect.withSpan("OrderStore.expireIdempotencyKeys")
      )

    const ping: Effect.Effect<void, SqlError> = sql`SELECT 1`.pipe(Effect.asVoid)

    return {
      owner,
      createOrder,
      findOrder,
      listOrders,
      claimOutbox,
      renewClaims,
      markQueued,
      outboxStats,
      applyNotificationSent,
      applyNotificationFailed,
      expireIdempotencyKeys,
      ping
    } as const
  }),
  dependencies: []
}) {}
