import * as SqlClient from "@effect/sql/SqlClient"
import { PgClient } from "@effect/sql-pg"
import { afterAll, describe, expect, it } from "@effect/vitest"
import {
  ConfigError,
  ConfigProvider,
  Context,
  Duration,
  Effect,
  Either,
  Exit,
  Layer,
  Logger,
  LogLevel,
  ManagedRuntime,
  Option,
  Redacted,
  Scope,
  TestClock,
  TestContext
} from "effect"
import { execFile } from "node:child_process"
import { mkdtempSync, rmSync } from "node:fs"
import { tmpdir } from "node:os"
import { join } from "node:path"
import { describeConfigError } from "../../src/config/Env"
import { makeOrderId, OrderId, UserId } from "../../src/domain/Order"
import { uuidv7 } from "../../src/domain/uuidv7"
import { DatabaseLive, databaseLayer, DatabaseTarget, redactDatabaseUrl } from "../../src/order/store/Database"
import { runMigrations } from "../../src/order/store/Migrations"
import { IdempotencyKeyReused } from "../../src/order/store/OrderRecord"
import { type NewOrder, OrderStore, OutboxLease } from "../../src/order/store/OrderStore"

/**
 * The same cases against the embedded SQLite file and a real PostgreSQL, each in a store of its
 * own: a temporary file, and a schema created for this run and dropped after it. A PostgreSQL
 * that does not answer fails the PostgreSQL cases (never a skip).
 */

const TEST_DATABASE_URL = process.env.TEST_DATABASE_URL ?? "postgres://postgres@127.0.0.1:5432/test"
const T0 = Date.parse("2025-06-01T00:00:00Z")

const sqliteFolder = mkdtempSync(join(tmpdir(), "order-store-"))
const sqliteFile = join(sqliteFolder, "orders.db")

const randomSchema = () => `test_store_${Math.random().toString(36).slice(2, 10)}`

/** The test database's URL with every connection's search_path set to `schema`. */
const inSchema = (schema: string) => {
  const url = new URL(TEST_DATABASE_URL)
  url.searchParams.set("options", `-c search_path=${schema}`)
  return Redacted.make(url.toString())
}

const postgresAdmin = PgClient.layer({ url: Redacted.make(TEST_DATABASE_URL), connectTimeout: Duration.seconds(5) }).pipe(
  Layer.mapError((error) =>
    new Error(
      `No PostgreSQL at ${redactDatabaseUrl(TEST_DATABASE_URL)} (${String((error.cause as Error | undefined)?.message ?? error.message)}); ` +
        "start one or point TEST_DATABASE_URL at one"
    )
  )
)

/** A schema that lives as long as the layer. */
const postgresSchema = (schema: string) =>
  Layer.scopedDiscard(Effect.gen(function*() {
    const sql = yield* SqlClient.SqlClient
    yield* Effect.acquireRelease(
      sql`CREATE SCHEMA ${sql(schema)}`,
      () => Effect.orDie(sql`DROP SCHEMA ${sql(schema)} CASCADE`)
    )
  })).pipe(Layer.provide(postgresAdmin))

interface Backend {
  readonly name: string
  readonly dialect: "sqlite" | "pg"
  readonly database: Layer.Layer<SqlClient.SqlClient, Error>
}

const pgSchema = randomSchema()
const backends: ReadonlyArray<Backend> = [
  {
    name: "SQLite",
    dialect: "sqlite",
    database: databaseLayer(DatabaseTarget.Sqlite({ filename: sqliteFile })).pipe(
      Layer.merge(Layer.scopedDiscard(Effect.addFinalizer(() =>
        Effect.sync(() => rmSync(sqliteFolder, { recursive: true, force: true }))
      )))
    )
  },
  {
    name: "PostgreSQL",
    dialect: "pg",
    database: databaseLayer(DatabaseTarget.Postgres({ url: inSchema(pgSchema) })).pipe(
      Layer.provide(postgresSchema(pgSchema))
    )
  }
]

const clearTables = Effect.gen(function*() {
  const sql = yield* SqlClient.SqlClient
  for (const table of ["orders", "outbox", "idempotency_keys", "order_events"]) {
    yield* sql`DELETE FROM ${sql(table)}`
  }
})

const countRows = (table: string) =>
  Effect.gen(function*() {
    const sql = yield* SqlClient.SqlClient
    const [row] = yield* sql<{ n: number | string }>`SELECT COUNT(*) AS n FROM ${sql(table)}`
    return Number(row!.n)
  })

const newOrder = (overrides: Partial<NewOrder> = {}): NewOrder => ({
  orderId: makeOrderId(),
  userId: UserId.make(42),
  body: JSON.stringify({ hello: "world" }),
  headers: { traceparent: "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01" },
  idempotency: Option.none(),
  ...overrides
})

const keyed = (key: string, requestHash: string) => Option.some({ key, requestHash })

/** Another OrderStore over the same database, open for the rest of the test: another replica, or the next process. */
const anotherStore = (lease?: Duration.DurationInput) =>
  Layer.build(
    lease === undefined
      ? OrderStore.Default
      : OrderStore.Default.pipe(Layer.provide(Layer.succeed(OutboxLease, Duration.decode(lease))))
  ).pipe(Effect.map((context) => Context.get(context, OrderStore)))

for (const backend of backends) {
  describe(`OrderStore on ${backend.name}`, () => {
    // Built once for the cases below. A database that does not answer fails every one of them.
    const runtime = ManagedRuntime.make(
      Layer.provideMerge(OrderStore.Default, backend.database).pipe(Layer.provide(Logger.minimumLogLevel(LogLevel.Warning)))
    )
    afterAll(() => runtime.dispose())

    const liveTest = <A, E>(name: string, body: () => Effect.Effect<A, E, OrderStore | SqlClient.SqlClient | Scope.Scope>) =>
      it.live(name, () => body().pipe(Effect.scoped, Effect.provide(runtime)))

    // From empty tables, on a test clock at T0, so that leases run out when a case says so.
    const storeTest = <A, E>(name: string, body: Effect.Effect<A, E, OrderStore | SqlClient.SqlClient | Scope.Scope>) =>
      liveTest(name, () =>
        Effect.gen(function*() {
          yield* clearTables
          yield* TestClock.setTime(T0)
          yield* body
        }).pipe(Effect.provide(TestContext.TestContext)))

    liveTest("running the migrations again changes nothing", () =>
      Effect.gen(function*() {
        expect(yield* runMigrations).toEqual([])
        expect(yield* runMigrations).toEqual([])
      }))

    storeTest(
      "createOrder stores the order accepted, with its command in the outbox",
      Effect.gen(function*() {
        const store = yield* OrderStore
        const input = newOrder()
        const { order, replayed } = yield* store.createOrder(input)
        expect(replayed).toBe(false)
        expect(order).toMatchObject({ orderId: input.orderId, userId: 42, status: "accepted", notifications: 0 })
        expect(yield* store.findOrder(input.orderId)).toEqual(Option.some(order))
        expect(order.createdAt).toEqual(new Date(T0))
        expect(yield* store.outboxStats).toEqual({ pending: 1, oldestCreatedAt: Option.some(new Date(T0)) })
        expect(yield* store.claimOutbox(10)).toEqual([
          { orderId: input.orderId, body: input.body, headers: input.headers, createdAt: new Date(T0) }
        ])
        expect(yield* store.findOrder(makeOrderId())).toEqual(Option.none())
        // An id in capitals names the same order.
        expect(Option.isSome(yield* store.findOrder(OrderId.make(input.orderId.toUpperCase())))).toBe(true)
      })
    )

    storeTest(
      "concurrent orders are stored together, each with its command, and each answered",
      Effect.gen(function*() {
        const store = yield* OrderStore
        const sql = yield* SqlClient.SqlClient
        const inputs = Array.from({ length: 300 }, (_, i) => newOrder({ userId: UserId.make(i + 1) }))
        const created = yield* Effect.all(inputs.map((input) => store.createOrder(input)), { concurrency: "unbounded" })
        expect(created.map(({ order }) => [order.orderId, order.userId])).toEqual(inputs.map((input) => [input.orderId, input.userId]))
        expect(yield* countRows("orders")).toBe(300)
        const claimed = yield* store.claimOutbox(1000)
        expect(new Set(claimed.map((entry) => entry.orderId))).toEqual(new Set(inputs.map((input) => input.orderId)))
        if (backend.dialect === "pg") {
          // xmin is the inserting transaction: far fewer transactions than orders.
          const [row] = yield* sql<{ n: string }>`SELECT COUNT(DISTINCT xmin::text) AS n FROM orders`
          expect(Number(row!.n)).toBeLessThan(100)
        }
      })
    )

    storeTest(
      "an order the database refuses fails alone: the others stored with it are stored",
      Effect.gen(function*() {
        const store = yield* OrderStore
        const twice = newOrder()
        const others = Array.from({ length: 20 }, () => newOrder())
        const inputs = [...others.slice(0, 10), twice, { ...twice, userId: UserId.make(7) }, ...others.slice(10)]
        const outcomes = yield* Effect.all(inputs.map((input) => Effect.either(store.createOrder(input))), { concurrency: "unbounded" })
        const refused = outcomes.filter(Either.isLeft)
        expect(refused).toHaveLength(1)
        expect(refused[0]!.left._tag).toBe("SqlError")
        expect(yield* countRows("orders")).toBe(21)
        expect(yield* countRows("outbox")).toBe(21)
      })
    )

    storeTest(
      "a store that has closed refuses new orders at once",
      Effect.gen(function*() {
        const scope = yield* Scope.make()
        const closedStore = yield* anotherStore().pipe(Scope.extend(scope))
        yield* Scope.close(scope, Exit.void)
        const error = yield* Effect.flip(closedStore.createOrder(newOrder()))
        expect(error.message).toBe("The order store is closing; nothing was stored")
        expect(yield* countRows("orders")).toBe(0)
      })
    )

    storeTest(
      "a command without headers comes back without headers",
      Effect.gen(function*() {
        const store = yield* OrderStore
        const input = newOrder({ headers: undefined })
        yield* store.createOrder(input)
        const [entry] = yield* store.claimOutbox(10)
        expect(entry?.headers).toBeUndefined()
      })
    )

    storeTest(
      "a repeated key with the same request replays the first order and stores nothing",
      Effect.gen(function*() {
        const store = yield* OrderStore
        const first = yield* store.createOrder(newOrder({ idempotency: keyed("key-1", "hash-a") }))
        yield* TestClock.adjust("1 minute")
        const again = yield* store.createOrder(newOrder({ idempotency: keyed("key-1", "hash-a") }))
        expect(again).toEqual({ order: first.order, replayed: true })
        expect(yield* countRows("orders")).toBe(1)
        expect(yield* countRows("outbox")).toBe(1)
      })
    )

    storeTest(
      "a repeated key with another request is IdempotencyKeyReused",
      Effect.gen(function*() {
        const store = yield* OrderStore
        yield* store.createOrder(newOrder({ idempotency: keyed("key-2", "hash-a") }))
        const error = yield* Effect.flip(store.createOrder(newOrder({ idempotency: keyed("key-2", "hash-b") })))
        expect(error).toBeInstanceOf(IdempotencyKeyReused)
        expect(error).toMatchObject({ _tag: "IdempotencyKeyReused", key: "key-2" })
        expect(yield* countRows("orders")).toBe(1)
        expect(yield* countRows("outbox")).toBe(1)
      })
    )

    storeTest(
      "50 concurrent requests with one key create one order, and all of them name it",
      Effect.gen(function*() {
        const store = yield* OrderStore
        const answers = yield* Effect.all(
          Array.from({ length: 50 }, () => store.createOrder(newOrder({ idempotency: keyed("key-3", "hash-a") }))),
          { concurrency: "unbounded" }
        )
        expect(yield* countRows("orders")).toBe(1)
        expect(yield* countRows("outbox")).toBe(1)
        expect(new Set(answers.map(({ order }) => order.orderId)).size).toBe(1)
        expect(answers.filter(({ replayed }) => !replayed)).toHaveLength(1)
        const [entry] = yield* store.claimOutbox(10)
        expect(entry?.orderId).toBe(answers[0]!.order.orderId)
      })
    )

    storeTest(
      "claimOutbox then markQueued: the order is queued and the outbox empty",
      Effect.gen(function*() {
        const store = yield* OrderStore
        const inputs = [newOrder(), newOrder(), newOrder()]
        for (const input of inputs) {
          yield* store.createOrder(input)
          yield* TestClock.adjust("1 millis")
        }
        const claimed = yield* store.claimOutbox(2)
        expect(claimed.map((entry) => entry.orderId)).toEqual(inputs.slice(0, 2).map((input) => input.orderId))
        yield* TestClock.adjust("1 second")
        yield* store.markQueued(claimed.map((entry) => entry.orderId))
        const queued = yield* store.findOrder(inputs[0]!.orderId)
        expect(Option.getOrThrow(queued)).toMatchObject({
          status: "queued",
          queuedAt: Option.some(new Date(T0 + 3 + 1000)),
          updatedAt: new Date(T0 + 3 + 1000)
        })
        expect((yield* store.outboxStats).pending).toBe(1)
        const rest = yield* store.claimOutbox(10)
        yield* store.markQueued(rest.map((entry) => entry.orderId))
        yield* store.markQueued([])
        expect(yield* store.outboxStats).toEqual({ pending: 0, oldestCreatedAt: Option.none() })
        expect(Option.getOrThrow(yield* store.findOrder(inputs[2]!.orderId)).status).toBe("queued")
      })
    )

    if (backend.dialect === "pg") {
      storeTest(
        "replicas draining the outbox at once never claim the same command",
        Effect.gen(function*() {
          const creator = yield* anotherStore()
          const inputs = Array.from({ length: 60 }, () => newOrder())
          yield* Effect.forEach(inputs, (input) => creator.createOrder(input), { discard: true })
          // The creator died: once its lease has run out, its commands are anyone's.
          yield* TestClock.adjust("11 seconds")
          const replicas = yield* Effect.all([anotherStore(), anotherStore(), anotherStore()])
          const drain = (replica: OrderStore) =>
            Effect.gen(function*() {
              const taken: Array<string> = []
              while (true) {
                const batch = yield* replica.claimOutbox(3)
                if (batch.length === 0) return taken
                taken.push(...batch.map((entry) => entry.orderId))
                yield* replica.markQueued(batch.map((entry) => entry.orderId))
              }
            })
          const taken = yield* Effect.all(replicas.map(drain), { concurrency: "unbounded" })
          const all = taken.flat()
          expect(all).toHaveLength(inputs.length)
          expect(new Set(all)).toEqual(new Set(inputs.map((input) => input.orderId)))
          // Each replica did some of the work (it is not one after the other).
          expect(taken.filter((ids) => ids.length > 0).length).toBeGreaterThan(1)
        })
      )

      storeTest(
        "a replica takes another's commands only once that one's lease has run out",
        Effect.gen(function*() {
          const owner = yield* anotherStore("2 seconds")
          const other = yield* anotherStore("2 seconds")
          const input = newOrder()
          yield* owner.createOrder(input)
          expect(yield* other.claimOutbox(10)).toEqual([])
          yield* TestClock.adjust("1 second")
          yield* owner.renewClaims // now held until T0 + 3 s
          yield* TestClock.adjust("1500 millis")
          expect(yield* other.claimOutbox(10)).toEqual([])
          expect((yield* owner.claimOutbox(10)).map((entry) => entry.orderId)).toEqual([input.orderId])
          // The owner stops renewing (it died): past the lease, the other one takes over.
          yield* TestClock.adjust("2001 millis")
          expect((yield* other.claimOutbox(10)).map((entry) => entry.orderId)).toEqual([input.orderId])
          expect(yield* owner.claimOutbox(10)).toEqual([])
        })
      )

      liveTest("three replicas migrating a fresh schema at once all start", () =>
        Effect.gen(function*() {
          const schema = randomSchema()
          const sql = yield* SqlClient.SqlClient
          yield* Layer.build(postgresSchema(schema))
          const replica = databaseLayer(DatabaseTarget.Postgres({ url: inSchema(schema) }))
          yield* Effect.all([1, 2, 3].map(() => Effect.scoped(Layer.build(replica))), { concurrency: "unbounded" })
          const rows = yield* sql`SELECT migration_id FROM ${sql(schema)}.effect_sql_migrations`
          expect(rows).toHaveLength(1)
          const tables = yield* sql<{ table_name: string }>`SELECT table_name FROM information_schema.tables
            WHERE table_schema = ${schema} ORDER BY table_name`
          expect(tables.map((row) => row.table_name)).toEqual([
            "effect_sql_migrations",
            "idempotency_keys",
            "order_events",
            "orders",
            "outbox"
          ])
        }))
    } else {
      storeTest(
        "the next process claims its predecessor's commands at once",
        Effect.gen(function*() {
          const store = yield* OrderStore
          const input = newOrder()
          yield* store.createOrder(input)
          const next = yield* anotherStore()
          expect((yield* next.claimOutbox(10)).map((entry) => entry.orderId)).toEqual([input.orderId])
        })
      )

      liveTest("a second process on the same file is refused with one clear line", () =>
        Effect.gen(function*() {
          const script = [
            `import { Cause, Effect, Exit, Layer } from "effect"`,
            `import { DatabaseLive } from "./src/order/store/Database.ts"`,
            `const exit = await Effect.runPromiseExit(Effect.scoped(Layer.build(DatabaseLive)))`,
            `if (Exit.isFailure(exit)) { process.stderr.write(Cause.squash(exit.cause).message + "\\n"); process.exit(1) }`
          ].join("\n")
          const child = yield* Effect.async<{ code: number | null; stderr: string }>((resume) => {
            execFile(
              process.execPath,
              ["--import", "tsx", "--input-type=module", "-e", script],
              { env: { ...process.env, DATABASE_URL: sqliteFile }, timeout: 25_000 },
              (error, _stdout, stderr) => resume(Effect.succeed({ code: error ? (error.code as number) : 0, stderr }))
            )
          })
          expect(child.code).toBe(1)
          expect(child.stderr.trim().split("\n")).toEqual([
            `The SQLite order store ${sqliteFile} is in use by another process: SQLite serves one order-service process; set DATABASE_URL to a PostgreSQL database to run several`
          ])
          // The process that holds the file is unaffected.
          yield* (yield* OrderStore).ping
        }))
    }

    storeTest(
      "a status never moves backward, whatever order the facts arrive in",
      Effect.gen(function*() {
        const store = yield* OrderStore
        const status = (orderId: OrderId) => Effect.map(store.findOrder(orderId), (o) => Option.getOrThrow(o))

        // Sent, then the broker's confirm: stays notified, and learns when it was queued.
        const a = newOrder()
        yield* store.createOrder(a)
        expect(yield* store.applyNotificationSent({ eventId: "a-sent", orderId: a.orderId, sentAt: new Date(T0 + 5) }))
          .toBe("applied")
        yield* store.markQueued([a.orderId])
        expect(yield* status(a.orderId)).toMatchObject({
          status: "notified",
          notifiedAt: Option.some(new Date(T0 + 5)),
          queuedAt: Option.some(new Date(T0)),
          notifications: 1
        })
        // A failure after the send is recorded but does not demote the order.
        expect(
          yield* store.applyNotificationFailed({
            eventId: "a-failed",
            orderId: a.orderId,
            reason: "late",
            attempts: 5,
            failedAt: new Date(T0 + 1)
          })
        ).toBe("applied")
        expect((yield* status(a.orderId)).status).toBe("notified")

        // Failed, then sent after a replay: notified, the failure kept.
        const b = newOrder()
        yield* store.createOrder(b)
        yield* store.markQueued([b.orderId])
        yield* store.applyNotificationFailed({
          eventId: "b-failed",
          orderId: b.orderId,
          reason: "SMTP down",
          attempts: 5,
          failedAt: new Date(T0 + 10)
        })
        expect(yield* status(b.orderId)).toMatchObject({
          status: "failed",
          failure: Option.some({ reason: "SMTP down", attempts: 5, failedAt: new Date(T0 + 10) })
        })
        yield* store.applyNotificationSent({ eventId: "b-sent", orderId: b.orderId, sentAt: new Date(T0 + 20) })
        expect(yield* status(b.orderId)).toMatchObject({
          status: "notified",
          notifications: 1,
          failure: Option.some({ reason: "SMTP down", attempts: 5, failedAt: new Date(T0 + 10) })
        })

        // The same event twice counts once; two sends count twice, the first send's time kept.
        const c = newOrder()
        yield* store.createOrder(c)
        yield* TestClock.adjust("1 second")
        expect(yield* store.applyNotificationSent({ eventId: "c-1", orderId: c.orderId, sentAt: new Date(T0 + 300) }))
          .toBe("applied")
        expect(yield* store.applyNotificationSent({ eventId: "c-1", orderId: c.orderId, sentAt: new Date(T0 + 300) }))
          .toBe("duplicate")
        expect((yield* status(c.orderId)).notifications).toBe(1)
        expect(yield* store.applyNotificationSent({ eventId: "c-2", orderId: c.orderId, sentAt: new Date(T0 + 200) }))
          .toBe("applied")
        expect(yield* status(c.orderId)).toMatchObject({
          status: "notified",
          notifications: 2,
          notifiedAt: Option.some(new Date(T0 + 200)),
          updatedAt: new Date(T0 + 1000)
        })
        // A duplicate failure changes nothing either.
        yield* store.applyNotificationFailed({ eventId: "c-f", orderId: c.orderId, reason: "x", attempts: 1, failedAt: new Date(T0) })
        expect(
          yield* store.applyNotificationFailed({ eventId: "c-f", orderId: c.orderId, reason: "y", attempts: 2, failedAt: new Date(T0 + 9) })
        ).toBe("duplicate")
        expect((yield* status(c.orderId)).failure).toEqual(Option.some({ reason: "x", attempts: 1, failedAt: new Date(T0) }))
      })
    )

    storeTest(
      "an event for an unknown order is reported and writes nothing",
      Effect.gen(function*() {
        const store = yield* OrderStore
        const orderId = makeOrderId()
        expect(yield* store.applyNotificationSent({ eventId: "u-1", orderId, sentAt: new Date(T0) })).toBe("unknownOrder")
        expect(
          yield* store.applyNotificationFailed({ eventId: "u-2", orderId, reason: "r", attempts: 1, failedAt: new Date(T0) })
        ).toBe("unknownOrder")
        expect(yield* countRows("order_events")).toBe(0)
        expect(yield* countRows("orders")).toBe(0)
      })
    )

    storeTest(
      "listOrders pages through a user's orders newest first",
      Effect.gen(function*() {
        const store = yield* OrderStore
        const ids = Array.from({ length: 5 }, (_, i) => OrderId.make(uuidv7(T0 + i)))
        for (const orderId of ids) yield* store.createOrder(newOrder({ orderId, userId: UserId.make(7) }))
        yield* store.createOrder(newOrder({ orderId: OrderId.make(uuidv7(T0 + 10)), userId: UserId.make(8) }))
        const page = (before: Option.Option<OrderId>) =>
          Effect.map(
            store.listOrders({ userId: UserId.make(7), limit: 2, before }),
            (orders) => orders.map((order) => order.orderId)
          )
        expect(yield* page(Option.none())).toEqual([ids[4], ids[3]])
        expect(yield* page(Option.some(ids[3]!))).toEqual([ids[2], ids[1]])
        expect(yield* page(Option.some(ids[1]!))).toEqual([ids[0]])
        expect(yield* page(Option.some(ids[0]!))).toEqual([])
        const [newest] = yield* store.listOrders({ userId: UserId.make(7), limit: 100, before: Option.none() })
        expect(newest).toMatchObject({ orderId: ids[4], userId: 7, status: "accepted" })
        expect(yield* store.listOrders({ userId: UserId.make(9), limit: 10, before: Option.none() })).toEqual([])
      })
    )

    storeTest(
      "expireIdempotencyKeys forgets only the keys older than the given time",
      Effect.gen(function*() {
        const store = yield* OrderStore
        yield* store.createOrder(newOrder({ idempotency: keyed("old", "h") }))
        yield* TestClock.adjust("1 hour")
        const recent = yield* store.createOrder(newOrder({ idempotency: keyed("recent", "h") }))
        expect(yield* store.expireIdempotencyKeys(new Date(T0 + 30 * 60_000))).toBe(1)
        expect(yield* store.expireIdempotencyKeys(new Date(T0 + 30 * 60_000))).toBe(0)
        expect((yield* store.createOrder(newOrder({ idempotency: keyed("old", "h") }))).replayed).toBe(false)
        expect(yield* store.createOrder(newOrder({ idempotency: keyed("recent", "h") }))).toEqual({
          order: recent.order,
          replayed: true
        })
      })
    )

    liveTest("ping answers", () => Effect.flatMap(OrderStore, (store) => store.ping))
  })
}

describe("DatabaseLive", () => {
  it.effect("an invalid DATABASE_URL is one line naming the variable, without the password", () =>
    Effect.gen(function*() {
      const error = yield* Effect.flip(Effect.scoped(Layer.build(DatabaseLive))).pipe(
        Effect.withConfigProvider(ConfigProvider.fromMap(new Map([["DATABASE_URL", "mysql://u:secret@x"]])))
      )
      if (!ConfigError.isConfigError(error)) return expect.fail(`expected a ConfigError, got ${error.message}`)
      const line = describeConfigError(error)
      expect(line).toBe(
        `Invalid configuration: DATABASE_URL must be a SQLite path, file:PATH, or a postgres:// or postgresql:// URL (got "mysql://u:***@x")`
      )
    }))
})
