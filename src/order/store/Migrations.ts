import * as Migrator from "@effect/sql/Migrator"
import * as SqlClient from "@effect/sql/SqlClient"
import { Effect } from "effect"

/**
 * The order store's schema, in SQL that SQLite and PostgreSQL both run. Times are epoch
 * milliseconds (BIGINT), so both dialects store and compare them the same way.
 */
const createOrderStore = Effect.gen(function*() {
  const sql = yield* SqlClient.SqlClient
  // Order ids are UUIDv7, listed newest first by comparing them as text: byte order, whatever
  // collation the PostgreSQL database was created with (SQLite compares bytes already).
  const orderIdType = sql.onDialectOrElse({
    pg: () => sql.literal(`TEXT COLLATE "C"`),
    orElse: () => sql.literal("TEXT")
  })

  yield* sql`CREATE TABLE orders (
    order_id ${orderIdType} PRIMARY KEY,
    user_id BIGINT NOT NULL,
    status TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL,
    queued_at BIGINT NULL,
    notified_at BIGINT NULL,
    notifications INTEGER NOT NULL DEFAULT 0,
    failure_reason TEXT NULL,
    failure_attempts INTEGER NULL,
    failed_at BIGINT NULL
  )`
  yield* sql`CREATE INDEX orders_by_user ON orders (user_id, order_id)`

  // One row per command not yet confirmed by the broker, claimed by one relay at a time.
  yield* sql`CREATE TABLE outbox (
    order_id ${orderIdType} PRIMARY KEY,
    body TEXT NOT NULL,
    headers TEXT NULL,
    created_at BIGINT NOT NULL,
    claimed_by TEXT NULL,
    claimed_until BIGINT NULL
  )`
  yield* sql`CREATE INDEX outbox_by_age ON outbox (created_at, order_id)`

  yield* sql`CREATE TABLE idempotency_keys (
    idempotency_key TEXT PRIMARY KEY,
    request_hash TEXT NOT NULL,
    order_id ${orderIdType} NOT NULL,
    created_at BIGINT NOT NULL
  )`
  yield* sql`CREATE INDEX idempotency_keys_by_age ON idempotency_keys (created_at)`

  // The events already applied, by their AMQP messageId, so that a redelivery changes nothing.
  yield* sql`CREATE TABLE order_events (
    event_id TEXT PRIMARY KEY,
    order_id ${orderIdType} NOT NULL,
    type TEXT NOT NULL,
    received_at BIGINT NOT NULL
  )`
})

export const migrations = Migrator.fromRecord({
  "1_create_order_store": createOrderStore
})

/**
 * Brings the schema up to date; returns the migrations it ran (none when it already was).
 * On PostgreSQL the migrator locks its table for the transaction, so replicas that start at once
 * run each migration once.
 */
export const runMigrations = Migrator.make({})({ loader: migrations })
