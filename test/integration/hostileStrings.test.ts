import { HttpClient, HttpClientRequest } from "@effect/platform"
import * as SqlClient from "@effect/sql/SqlClient"
import { PgClient } from "@effect/sql-pg"
import { afterAll, describe, expect, it } from "@effect/vitest"
import type * as amqp from "amqplib"
import { Duration, Effect, Either, Layer, Logger, LogLevel, ManagedRuntime, Option, Redacted, Schedule } from "effect"
import { mkdtempSync, readdirSync, readFileSync, rmSync, statSync } from "node:fs"
import { tmpdir } from "node:os"
import { join, relative } from "node:path"
import { decodeEvent, isStorableText, NotificationFailedEvent } from "../../src/contracts/NotificationEvents"
import { makeOrderId, OrderId, UserId } from "../../src/domain/Order"
import { databaseLayer, DatabaseTarget, redactDatabaseUrl } from "../../src/order/store/Database"
import { OrderStore } from "../../src/order/store/OrderStore"
import { eventually, nextMessages, queueDepth, testBroker, uniqueQueueName } from "../support/broker"
import { eventsQueueOf, orderService } from "../support/services"

/**
 * SQL only through parameterised statements (security issue): hostile strings in every text field
 * that reaches the order store (idempotency keys and their request hashes, the outbox's command
 * body and headers, order ids looked up or listed after, event ids, failure reasons), against the
 * embedded SQLite file and a real PostgreSQL (a schema of this run's own, dropped after it). The
 * tables stay intact, and each string comes back exactly as it went in, where it is stored. An
 * event's id and reason reach the store only from a decoded event, which holds no NUL and no lone
 * surrogate (decodeEvent refuses the event, and the consumer dead-letters it): those two are tried
 * against decodeEvent, not the store. Then a static check of src/: no SQL built from strings.
 */

const TEST_DATABASE_URL = process.env.TEST_DATABASE_URL ?? "postgres://postgres@127.0.0.1:5432/test"

/** Strings that would break, or change, a statement built by concatenation. */
const INJECTIONS = [
  "'; DROP TABLE orders; --",
  "'); DELETE FROM idempotency_keys; --",
  "Robert'); DROP TABLE order_events;--",
  "' OR '1'='1",
  "\" OR \"\"=\"",
  "\\",
  "\\'; DROP TABLE outbox; --",
  "\\\\",
  "$1",
  "$$; DROP TABLE orders; $$",
  "?",
  ":name",
  "@p1",
  "%",
  "_",
  "%' OR order_id LIKE '%",
  "/* */ OR 1=1 --",
  ";",
  "`orders`",
  "E'\\x00'"
]

/** Strings whose characters are hard to store: controls, non-ASCII, the longest key. */
const AWKWARD = [
  "a\u0000b",
  "\u0000",
  "\n\r\t\u000b\u000c",
  "\u007f\u0080\u009f",
  "é ü ß 日本 🙂 👩‍👩‍👧",
  "\u202e\u2066right-to-left",
  "\ufeffbom",
  "\u2028\u2029",
  "k".repeat(255),
  "x".repeat(10_000)
]

/**
 * A string that is not well-formed UTF-16 (a lone surrogate): JSON can carry one (`"\ud800"`). No
 * UTF-8 column holds one: given one directly, SQLite keeps three U+FFFD for it, PostgreSQL one.
 */
const LONE_SURROGATES = ["\ud800", "a\udfffb"]

/** An Idempotency-Key the API lets through: 1 to 255 visible ASCII, so the injections without spaces. */
const visibleAscii = (s: string) => /^[\x21-\x7e]{1,255}$/.test(s)
const API_KEYS = [
  ...INJECTIONS.filter(visibleAscii),
  "';DROP/**/TABLE/**/orders;--",
  "'||(SELECT/**/1)||'",
  "~!@#$%^&*()_+{}|:\"<>?`-=[]\\;',./",
  "k".repeat(255)
]

// ---------------------------------------------------------------------------------------------
// The two stores.

const sqliteFolder = mkdtempSync(join(tmpdir(), "hostile-strings-"))

const inSchema = (schema: string) => {
  const url = new URL(TEST_DATABASE_URL)
  url.searchParams.set("options", `-c search_path=${schema}`)
  return url.toString()
}

const postgresAdmin = PgClient.layer({ url: Redacted.make(TEST_DATABASE_URL), connectTimeout: Duration.seconds(5) }).pipe(
  Layer.mapError((error) =>
    new Error(`No PostgreSQL at ${redactDatabaseUrl(TEST_DATABASE_URL)} (${String((error.cause as Error | undefined)?.message ?? error.message)})`)
  )
)

/** A schema that lives as long as the layer. */
const postgresSchema = (schema: string) =>
  Layer.scopedDiscard(Effect.gen(function*() {
    const sql = yield* SqlClient.SqlClient
    yield* Effect.acquireRelease(sql`CREATE SCHEMA ${sql(schema)}`, () => Effect.orDie(sql`DROP SCHEMA ${sql(schema)} CASCADE`))
  })).pipe(Layer.provide(postgresAdmin))

const randomSchema = () => `test_hostile_${Math.random().toString(36).slice(2, 10)}`
const pgSchema = randomSchema()

const backends = [
  {
    name: "SQLite",
    dialect: "sqlite" as const,
    database: databaseLayer(DatabaseTarget.Sqlite({ filename: join(sqliteFolder, "orders.db") })).pipe(
      Layer.merge(Layer.scopedDiscard(Effect.addFinalizer(() => Effect.sync(() => rmSync(sqliteFolder, { recursive: true, force: true })))))
    )
  },
  {
    name: "PostgreSQL",
    dialect: "pg" as const,
    database: databaseLayer(DatabaseTarget.Postgres({ url: Redacted.make(inSchema(pgSchema)) })).pipe(
      Layer.provide(postgresSchema(pgSchema))
    )
  }
]

const TABLES = ["orders", "outbox", "idempotency_keys", "order_events"] as const

const countRows = (table: (typeof TABLES)[number]) =>
  Effect.flatMap(SqlClient.SqlClient, (sql) =>
    Effect.map(sql<{ n: number | string }>`SELECT COUNT(*) AS n FROM ${sql(table)}`, ([row]) => Number(row!.n)))

const tableCounts = Effect.all(Object.fromEntries(TABLES.map((table) => [table, countRows(table)])) as Record<(typeof TABLES)[number], Effect.Effect<number, unknown, SqlClient.SqlClient>>)

/** What the store did with one hostile string in one field: kept it exactly, kept something else, or refused it as a SqlError. */
type Outcome = "exact" | { readonly stored: string } | { readonly refused: string }

/**
 * What the store may do with `value`: keep it exactly; or, on PostgreSQL, refuse a NUL, which no
 * TEXT column holds, as long as it stores nothing.
 */
const acceptable = (dialect: "sqlite" | "pg", value: string, outcome: Outcome) =>
  outcome === "exact" || ("refused" in outcome && dialect === "pg" && value.includes("\u0000"))

/** A NotificationFailed delivery as the order service receives it, `reason` in its JSON body (a NUL or lone surrogate escaped). */
const failedEventDelivery = (orderId: string, messageId: string, reason: string): amqp.Message =>
  ({
    content: Buffer.from(JSON.stringify({ orderId, userId: 77, reason, attempts: 3, failedAt: "2026-01-01T00:00:00.000Z" })),
    fields: { deliveryTag: 1, redelivered: false, exchange: "", routingKey: "q", consumerTag: "c" },
    properties: { type: "NotificationFailed", messageId, headers: {} }
  }) as unknown as amqp.Message

const describeOutcome = (value: string, outcome: Outcome) =>
  `${JSON.stringify(value.length > 60 ? `${value.slice(0, 60)}...` : value)}: ${
    outcome === "exact" ? "exact" : "stored" in outcome ? `stored as ${JSON.stringify(outcome.stored.slice(0, 60))}` : `refused (${outcome.refused})`
  }`

for (const backend of backends) {
  describe(`hostile strings in the order store on ${backend.name}`, () => {
    const runtime = ManagedRuntime.make(
      Layer.provideMerge(OrderStore.Default, backend.database).pipe(Layer.provide(Logger.minimumLogLevel(LogLevel.Warning)))
    )
    afterAll(() => runtime.dispose())
    const storeTest = <A, E>(name: string, body: Effect.Effect<A, E, OrderStore | SqlClient.SqlClient>) =>
      it.live(name, () => body.pipe(Effect.provide(runtime)), 30_000)

    const newOrder = (overrides: Partial<Parameters<OrderStore["createOrder"]>[0]> = {}) => ({
      orderId: makeOrderId(),
      userId: UserId.make(77),
      body: "{}",
      headers: undefined,
      idempotency: Option.none(),
      ...overrides
    })

    /** Every table is still there, and holds what the test put in it. */
    const expectTablesIntact = (before: Record<string, number>, added: Partial<Record<(typeof TABLES)[number], number>>) =>
      Effect.gen(function*() {
        const after = yield* tableCounts
        for (const table of TABLES) expect(after[table], table).toBe(before[table]! + (added[table] ?? 0))
      })

    storeTest(
      "Idempotency-Keys the API lets through: each stored exactly, replayed only by itself",
      Effect.gen(function*() {
        const store = yield* OrderStore
        const sql = yield* SqlClient.SqlClient
        const before = yield* tableCounts
        for (const key of API_KEYS) {
          const first = yield* store.createOrder(newOrder({ idempotency: Option.some({ key, requestHash: key }) }))
          expect(first.replayed, key).toBe(false)
          const [row] = yield* sql<{ idempotency_key: string; request_hash: string }>`SELECT idempotency_key, request_hash FROM idempotency_keys WHERE order_id = ${first.order.orderId}`
          expect(row, key).toEqual({ idempotency_key: key, request_hash: key })
          const again = yield* store.createOrder(newOrder({ idempotency: Option.some({ key, requestHash: key }) }))
          expect(again, key).toEqual({ order: first.order, replayed: true })
        }
        // A key differing by one character is another key.
        const other = yield* store.createOrder(newOrder({ idempotency: Option.some({ key: `${API_KEYS[0]}x`, requestHash: "h" }) }))
        expect(other.replayed).toBe(false)
        yield* expectTablesIntact(before, { orders: API_KEYS.length + 1, outbox: API_KEYS.length + 1, idempotency_keys: API_KEYS.length + 1 })
      })
    )

    storeTest(
      "any string as an idempotency key, request hash, command body or header (none the API would pass): kept exactly or refused whole, tables intact",
      Effect.gen(function*() {
        const store = yield* OrderStore
        const sql = yield* SqlClient.SqlClient
        const before = yield* tableCounts
        const outcomes: Array<string> = []
        let stored = 0
        for (const value of [...INJECTIONS, ...AWKWARD]) {
          const input = newOrder({
            body: value,
            headers: { traceparent: value, [value.slice(0, 50) || "empty"]: value },
            idempotency: Option.some({ key: `k:${value}`, requestHash: value })
          })
          const created = yield* Effect.either(store.createOrder(input))
          if (Either.isLeft(created)) {
            const outcome = { refused: created.left.message }
            if (!acceptable(backend.dialect, value, outcome)) outcomes.push(describeOutcome(value, outcome))
            continue
          }
          stored++
          const [key] = yield* sql<{ idempotency_key: string; request_hash: string }>`SELECT idempotency_key, request_hash FROM idempotency_keys WHERE order_id = ${input.orderId}`
          const [entry] = (yield* store.claimOutbox(1_000_000)).filter((e) => e.orderId === input.orderId)
          const exact = key?.idempotency_key === `k:${value}` && key.request_hash === value && entry?.body === value &&
            JSON.stringify(entry.headers) === JSON.stringify(input.headers)
          if (!exact) outcomes.push(describeOutcome(value, { stored: String(entry?.body) }))
          yield* store.markQueued([input.orderId])
        }
        // A refused order left nothing behind: no order, command or key of its own.
        yield* expectTablesIntact(before, { orders: stored, idempotency_keys: stored })
        expect(outcomes).toEqual([])
      })
    )

    storeTest(
      "any string as an order id to find, or a cursor to list after: no order, no error, tables intact",
      Effect.gen(function*() {
        const store = yield* OrderStore
        const before = yield* tableCounts
        const refused: Array<string> = []
        for (const value of [...INJECTIONS, ...AWKWARD, ...LONE_SURROGATES]) {
          const found = yield* Effect.either(store.findOrder(value as OrderId))
          if (Either.isLeft(found)) {
            const outcome = { refused: found.left.message }
            if (!acceptable(backend.dialect, value, outcome)) refused.push(describeOutcome(value, outcome))
          } else expect(found.right, value).toEqual(Option.none())
          const listed = yield* Effect.either(store.listOrders({ userId: UserId.make(77), limit: 5, before: Option.some(value as OrderId) }))
          if (Either.isLeft(listed)) {
            const outcome = { refused: listed.left.message }
            if (!acceptable(backend.dialect, value, outcome)) refused.push(describeOutcome(value, outcome))
          }
        }
        yield* expectTablesIntact(before, {})
        // The API never passes these (ids and cursors are UUIDs by then); the store still must not misread them.
        expect(refused).toEqual([])
      })
    )

    storeTest(
      "any string as an event id or a failure reason (both come off the wire): refused by decodeEvent if it holds a NUL or a lone surrogate; else applied once, kept exactly",
      Effect.gen(function*() {
        const store = yield* OrderStore
        const sql = yield* SqlClient.SqlClient
        const before = yield* tableCounts
        const outcomes: Array<string> = []
        let orders = 0
        let refused = 0
        for (const value of [...INJECTIONS, ...AWKWARD, ...LONE_SURROGATES]) {
          const { order } = yield* store.createOrder(newOrder())
          orders++
          const eventId = `${order.orderId}:${value}`
          // What the store is given comes from a decoded event only: the event the value arrives in, as
          // its id and as its reason, decoded as the order service decodes it.
          const asId = decodeEvent(failedEventDelivery(order.orderId, eventId, "SMTP said no"))
          const asReason = decodeEvent(failedEventDelivery(order.orderId, `${order.orderId}:reason`, value))
          if (!isStorableText(value)) {
            // Never given to the store (the consumer dead-letters the event), so never mangled nor retried.
            refused++
            expect(asId, describeOutcome(value, { refused: "?" })).toEqual(Either.left("the event's messageId holds a NUL or a lone surrogate"))
            expect(Either.isLeft(asReason) && asReason.left, JSON.stringify(value)).toMatch(
              /^not a valid NotificationFailed \(reason: must be text without NUL or lone surrogates\)$/
            )
            continue
          }
          if (Either.isLeft(asId) || Either.isLeft(asReason)) {
            outcomes.push(`${describeOutcome(value, { refused: "by decodeEvent" })}: ${Either.isLeft(asId) ? asId.left : ""} ${Either.isLeft(asReason) ? asReason.left : ""}`)
            continue
          }
          expect(asId.right.eventId).toBe(eventId)
          const reason = (asReason.right.event as NotificationFailedEvent).reason
          expect(reason).toBe(value)
          const failedAt = new Date(Date.UTC(2026, 0, 1))
          // Nothing to refuse here: no NUL (no TEXT column of PostgreSQL's holds one), no lone surrogate.
          const applied = yield* Effect.either(
            store.applyNotificationFailed({ eventId: asId.right.eventId, orderId: order.orderId, reason, attempts: 3, failedAt })
          )
          if (Either.isLeft(applied)) {
            outcomes.push(describeOutcome(value, { refused: applied.left.message }))
            continue
          }
          expect(applied.right).toBe("applied")
          // The same event again is a duplicate: the id was matched exactly.
          expect(yield* store.applyNotificationFailed({ eventId, orderId: order.orderId, reason: "other", attempts: 4, failedAt })).toBe("duplicate")
          const found = Option.getOrThrow(yield* store.findOrder(order.orderId))
          const [row] = yield* sql<{ event_id: string }>`SELECT event_id FROM order_events WHERE order_id = ${order.orderId}`
          const failure = Option.getOrThrow(found.failure)
          if (failure.reason !== value || row?.event_id !== eventId) {
            outcomes.push(describeOutcome(value, { stored: `${failure.reason}|${row?.event_id}` }))
          }
          expect(found.status).toBe("failed")
        }
        // The NUL strings and the lone surrogates: refused before the store.
        expect(refused).toBe(AWKWARD.filter((value) => value.includes("\u0000")).length + LONE_SURROGATES.length)
        yield* expectTablesIntact(before, { orders, outbox: orders, order_events: orders - refused })
        expect(outcomes).toEqual([])
      })
    )
  })
}

// ---------------------------------------------------------------------------------------------
// What a stuck event costs: the order service on PostgreSQL, given an event its store refuses.

describe("the order service on PostgreSQL, given events whose text PostgreSQL cannot store", () => {
  const schema = randomSchema()
  const notStorableReason = /^not a valid NotificationFailed \(reason: must be text without NUL or lone surrogates\)$/
  const cases = [
    ["a failure reason with a NUL (JSON \"\\u0000\")", "SMTP said \u0000no", "nul-in-reason", notStorableReason],
    ["a failure reason with a lone surrogate (JSON \"\\ud800\")", "SMTP said \ud800no", "surrogate-in-reason", notStorableReason],
    ["a messageId with a NUL", "SMTP said no", "nul\u0000in-id", /^the event's messageId holds a NUL or a lone surrogate$/]
  ] as const
  for (const [index, [what, reason, messageId, refusal]] of cases.entries()) {
    it.scopedLive(`${what}: dead-lettered at once with why, never stored nor retried; the next event still applied`, () =>
      Effect.gen(function*() {
        const queue = uniqueQueueName("pgnul")
        const { channel } = yield* testBroker(queue)
        const eventsQueue = eventsQueueOf(queue)
        yield* Layer.build(postgresSchema(`${schema}_${index}`))
        yield* Effect.gen(function*() {
          const created = yield* HttpClientRequest.post("/orders").pipe(
            HttpClientRequest.bodyUnsafeJson({ userId: 42 }),
            HttpClient.execute,
            Effect.flatMap((response) => response.json),
            Effect.scoped
          )
          const orderId = (created as { order: { orderId: string } }).order.orderId
          const order = HttpClient.get(`/orders/${orderId}`).pipe(Effect.flatMap((r) => r.json), Effect.scoped) as Effect.Effect<Record<string, any>>
          yield* order.pipe(Effect.filterOrFail((o) => o.status === "queued"), Effect.retry(Schedule.spaced("25 millis").pipe(Schedule.upTo("15 seconds"))))
          const properties = (type: string, id: string) => ({ type, messageId: id, contentType: "application/json", persistent: true })
          channel.sendToQueue(
            eventsQueue,
            Buffer.from(JSON.stringify({ orderId, userId: 42, reason, attempts: 5, failedAt: new Date().toISOString() })),
            properties("NotificationFailed", messageId)
          )
          channel.sendToQueue(
            eventsQueue,
            Buffer.from(JSON.stringify({ orderId, userId: 42, sentAt: new Date().toISOString() })),
            properties("NotificationSent", "after-it")
          )
          // The refused event is in the dead-letter queue, with why.
          const [deadLettered] = yield* nextMessages(channel, `${eventsQueue}.dlq`, 1).pipe(
            Effect.timeoutFail({ duration: "5 seconds", onTimeout: () => new Error(`nothing reached ${eventsQueue}.dlq within 5 s`) })
          )
          expect(deadLettered!.properties.messageId).toBe(messageId)
          expect((deadLettered!.properties.headers ?? {})["x-failure-reason"]).toMatch(refusal)
          const settled = yield* order.pipe(
            Effect.filterOrFail((o) => o.status === "notified"),
            Effect.retry(Schedule.spaced("50 millis").pipe(Schedule.upTo("10 seconds")))
          )
          // The failure never reached the store.
          expect(settled.failure).toBeUndefined()
          // Nothing left unsettled on the events queue: the refused event was not kept back to retry for ever.
          yield* eventually(() => Effect.runPromise(queueDepth(eventsQueue)), (depth) => depth === 0, {
            timeoutMs: 5_000,
            what: "the events queue drained"
          })
        }).pipe(Effect.provide(orderService({ COMMAND_QUEUE: queue, DATABASE_URL: inSchema(`${schema}_${index}`), SHUTDOWN_TIMEOUT_MS: 1000 })))
      }), 45_000)
  }
})

// ---------------------------------------------------------------------------------------------
// A static check: the only SQL in src/ is written in `sql` tagged templates.

const SRC = join(import.meta.dirname, "../../src")

const sourceFiles = (folder: string): ReadonlyArray<string> =>
  readdirSync(folder).flatMap((name) => {
    const path = join(folder, name)
    return statSync(path).isDirectory() ? sourceFiles(path) : path.endsWith(".ts") ? [path] : []
  })

interface Literal {
  readonly file: string
  readonly line: number
  /** The identifier right before a template literal (`sql` for sql`...`), if any. */
  readonly tag: string | undefined
  readonly kind: "template" | "string"
  /** The literal's own text, interpolations left out. */
  readonly text: string
}

/** The string and template literals of a TypeScript file, comments skipped, templates nested in `${}` too. */
const literalsOf = (file: string, source: string): ReadonlyArray<Literal> => {
  const found: Array<Literal> = []
  const lineAt = (index: number) => source.slice(0, index).split("\n").length
  const tagBefore = (index: number) => /([A-Za-z_$][\w$.]*)\s*$/.exec(source.slice(Math.max(0, index - 40), index))?.[1]
  // Scans code from `i` until an unmatched `}` (the end of an interpolation) or the end; returns where it stopped.
  const scanCode = (start: number, inInterpolation: boolean): number => {
    let i = start
    let depth = 0
    while (i < source.length) {
      const c = source[i]!
      if (c === "/" && source[i + 1] === "/") i = source.indexOf("\n", i) === -1 ? source.length : source.indexOf("\n", i)
      else if (c === "/" && source[i + 1] === "*") i = source.indexOf("*/", i + 2) + 2
      else if (c === "\"" || c === "'") {
        let j = i + 1
        while (j < source.length && source[j] !== c) j += source[j] === "\\" ? 2 : 1
        found.push({ file, line: lineAt(i), tag: undefined, kind: "string", text: source.slice(i + 1, j) })
        i = j + 1
      } else if (c === "`") i = scanTemplate(i)
      else if (c === "{") {
        depth++
        i++
      } else if (c === "}") {
        if (depth === 0 && inInterpolation) return i + 1
        depth--
        i++
      } else i++
    }
    return i
  }
  const scanTemplate = (start: number): number => {
    const tag = tagBefore(start)
    let text = ""
    let i = start + 1
    while (i < source.length && source[i] !== "`") {
      if (source[i] === "\\") {
        text += source.slice(i, i + 2)
        i += 2
      } else if (source[i] === "$" && source[i + 1] === "{") {
        text += "${}"
        i = scanCode(i + 2, true)
      } else text += source[i++]
    }
    found.push({ file, line: lineAt(start), tag, kind: "template", text })
    return i + 1
  }
  scanCode(0, false)
  return found
}

const SQL_TEXT =
  /\b(SELECT\s+[\w*(]|INSERT\s+INTO\b|UPDATE\s+\w+\s+SET\b|DELETE\s+FROM\b|CREATE\s+(TABLE|INDEX|SCHEMA)\b|DROP\s+(TABLE|SCHEMA|TRIGGER)\b|ALTER\s+TABLE\b|PRAGMA\s+\w|BEGIN\s+IMMEDIATE\b|TRUNCATE\b)/i

describe("SQL in src/", () => {
  const files = sourceFiles(SRC).map((file) => ({ file: relative(SRC, file), source: readFileSync(file, "utf8") }))

  it("the scan sees the store's own statements (it would notice SQL elsewhere)", () => {
    const store = files.find(({ file }) => file === "order/store/OrderStore.ts")!
    const sqlTemplates = literalsOf(store.file, store.source).filter((l) => l.tag === "sql" && SQL_TEXT.test(l.text))
    expect(sqlTemplates.length).toBeGreaterThanOrEqual(10)
    // And the nested fragment of claimOutbox's UPDATE ... WHERE order_id IN (${claimable}).
    expect(sqlTemplates.some((l) => /FOR UPDATE SKIP LOCKED/.test(l.text))).toBe(true)
    // And it tells concatenated SQL from tagged templates.
    const planted = literalsOf(
      "planted.ts",
      "// SELECT * FROM comments is prose\nconst a = \"SELECT * FROM orders WHERE order_id = '\" + id + \"'\"\n" +
        "const b = `DELETE FROM outbox WHERE order_id = '${id}'`\nconst c = sql`UPDATE orders SET status = ${s}`\n"
    ).filter((l) => SQL_TEXT.test(l.text))
    expect(planted.map((l) => [l.line, l.kind, l.tag ?? null])).toEqual([[2, "string", null], [3, "template", null], [4, "template", "sql"]])
  })

  it("every statement is a `sql` tagged template: no SQL in plain strings or untagged templates", () => {
    const outside = files.flatMap(({ file, source }) =>
      literalsOf(file, source)
        .filter((l) => SQL_TEXT.test(l.text) && !(l.kind === "template" && l.tag === "sql"))
        .map((l) => `${l.file}:${l.line} ${l.kind}${l.tag === undefined ? "" : ` tagged ${l.tag}`}: ${l.text.slice(0, 80)}`)
    )
    expect(outside).toEqual([])
  })

  it("no sql.unsafe, no raw driver, and sql.literal / sql(identifier) only with constants (the two known ones)", () => {
    const unsafe = files.flatMap(({ file, source }) =>
      [...source.matchAll(/\bsql\.unsafe\s*\(|\.unsafe\s*\(\s*[`"']/g)].map((m) => `${file}: ${m[0]}`)
    )
    expect(unsafe).toEqual([])
    const drivers = files.flatMap(({ file, source }) =>
      [...source.matchAll(/from\s+"(pg|postgres|better-sqlite3|sqlite3|mysql2?)"/g)].map((m) => `${file}: ${m[0]}`)
    )
    expect(drivers).toEqual([])
    // sql.literal(...) and sql(...) calls, with their argument as written.
    const calls = files.flatMap(({ file, source }) =>
      [...source.matchAll(/\bsql(\.literal)?\(([^)]*)\)/g)].map((m) => ({ file, call: m[0], argument: m[2]!.trim() }))
    )
    const constant = (argument: string) => /^(["'])[^"'`$]*\1$|^`[^`$]*`$/.test(argument)
    expect(calls.filter(({ argument }) => !constant(argument)).map(({ call, file }) => `${file}: ${call}`)).toEqual([])
    // The known ones: a column type chosen by dialect, which a parameter cannot stand for.
    expect(calls.map(({ call, file }) => `${file}: ${call}`).sort()).toEqual([
      "order/store/Migrations.ts: sql.literal(\"TEXT\")",
      "order/store/Migrations.ts: sql.literal(`TEXT COLLATE \"C\"`)"
    ])
  })
})
