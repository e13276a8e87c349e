import * as SqlClient from "@effect/sql/SqlClient"
import { PgClient } from "@effect/sql-pg"
import { SqliteClient } from "@effect/sql-sqlite-node"
import { Cause, Config, ConfigError, Data, Duration, Effect, Either, Layer, Option, Redacted, Schedule } from "effect"
import { mkdirSync } from "node:fs"
import { dirname } from "node:path"
import { fileURLToPath } from "node:url"
import { fromFileOr } from "../../config/Env"
import { backoff } from "../../runtime/backoff"
import { errorMessage } from "../../runtime/describe"
import { runMigrations } from "./Migrations"

/** Where the order store lives. */
export type DatabaseTarget = Data.TaggedEnum<{
  Sqlite: { readonly filename: string }
  Postgres: { readonly url: Redacted.Redacted<string> }
}>
export const DatabaseTarget = Data.taggedEnum<DatabaseTarget>()

/** The order store could not be opened; the service stops with this one line. */
export class StoreStartError extends Data.TaggedError("StoreStartError")<{ readonly message: string }> {}

const DEFAULT_SQLITE_FILE = "data/orders.db"

/** A database URL fit for a log line or an error: every password replaced by `***`. */
export const redactDatabaseUrl = (url: string | Redacted.Redacted<string>): string =>
  (Redacted.isRedacted(url) ? Redacted.value(url) : url)
    // Up to the last "@" of the authority: a password may itself contain an unencoded "@".
    .replace(/^([a-z][a-z0-9+.-]*:\/\/[^:/@?#]*:)[^/?#]*@/i, "$1***@")
    .replace(/([?&]password=)[^&#]*/gi, "$1***")

const parseTarget = (raw: string): DatabaseTarget | undefined => {
  if (/^postgres(ql)?:\/\//i.test(raw)) {
    return URL.canParse(raw) ? DatabaseTarget.Postgres({ url: Redacted.make(raw) }) : undefined
  }
  if (/^file:/i.test(raw)) {
    try {
      const filename = raw.startsWith("file://") ? fileURLToPath(raw) : raw.slice("file:".length)
      return filename === "" ? undefined : DatabaseTarget.Sqlite({ filename })
    } catch {
      return undefined
    }
  }
  // Any other scheme is a mistake, not a file name; one letter and a colon is a Windows drive.
  return /^[a-z][a-z0-9+.-]+:/i.test(raw) ? undefined : DatabaseTarget.Sqlite({ filename: raw })
}

/** `DATABASE_URL` (or `DATABASE_URL_FILE`): unset for the embedded SQLite file, a path or `file:PATH`, or a PostgreSQL URL. */
export const DatabaseConfig: Config.Config<DatabaseTarget> = fromFileOr("DATABASE_URL").pipe(
  Config.mapOrFail((raw) => {
    if (Option.isNone(raw) || raw.value.trim() === "") {
      return Either.right(DatabaseTarget.Sqlite({ filename: DEFAULT_SQLITE_FILE }))
    }
    const target = parseTarget(raw.value.trim())
    return target === undefined
      ? Either.left(ConfigError.InvalidData(
        ["DATABASE_URL"],
        `DATABASE_URL must be a SQLite path, file:PATH, or a postgres:// or postgresql:// URL (got ${
          JSON.stringify(redactDatabaseUrl(raw.value))
        })`
      ))
      : Either.right(target)
  })
)

/** The SQLite error in a failure, wherever the client wrapped it (in a SqlError, or as a defect). */
const sqliteError = (cause: Cause.Cause<unknown>): { readonly code: string; readonly message: string } | undefined => {
  for (const error of [...Cause.failures(cause), ...Cause.defects(cause)]) {
    for (let e: unknown = error; typeof e === "object" && e !== null; e = (e as { cause?: unknown }).cause) {
      const { code, message } = e as { code?: unknown; message?: unknown }
      if (typeof code === "string" && code.startsWith("SQLITE_")) return { code, message: String(message) }
    }
  }
  return undefined
}

const sqliteLayer = (filename: string) => {
  const lockAndTune = Effect.gen(function*() {
    const sql = yield* SqlClient.SqlClient
    // One process owns the file for as long as it runs: a second one is refused, not interleaved.
    yield* sql`PRAGMA locking_mode = EXCLUSIVE`
    // With WAL, a commit survives a crash of the process but the last ones may be lost on power loss.
    yield* sql`PRAGMA synchronous = NORMAL`
    // The exclusive lock is taken by the first write: take it now, not on the first order.
    yield* sql`BEGIN IMMEDIATE`
    yield* sql`COMMIT`
  })
  const createFolder = Effect.try({
    try: () => mkdirSync(dirname(filename), { recursive: true }),
    catch: (cause) =>
      new StoreStartError({ message: `Cannot create the folder of the SQLite order store ${filename}: ${errorMessage(cause)}` })
  })
  return Layer.unwrapEffect(Effect.as(
    createFolder,
    Layer.effectDiscard(lockAndTune).pipe(Layer.provideMerge(SqliteClient.layer({ filename })))
  )).pipe(
    // The client opens the file as it is built, so an unreadable or locked file fails as a defect.
    Layer.catchAllCause((cause) => {
      if (Cause.isInterruptedOnly(cause)) return Layer.failCause(cause as Cause.Cause<never>)
      const failure = Cause.failureOption(cause)
      if (Option.isSome(failure) && failure.value instanceof StoreStartError) return Layer.fail(failure.value)
      const error = sqliteError(cause)
      // better-sqlite3 has waited its busy timeout by then, long enough for a predecessor to exit.
      return Layer.fail(new StoreStartError({
        message: error?.code === "SQLITE_BUSY"
          ? `The SQLite order store ${filename} is in use by another process: SQLite serves one order-service process; set DATABASE_URL to a PostgreSQL database to run several`
          : `Cannot open the SQLite order store ${filename}: ${error?.message ?? errorMessage(Cause.squash(cause))}`
      }))
    })
  )
}


/** Why the driver refused, in one line: node's connection errors may be an AggregateError with no message. */
const reasonOf = (error: { readonly message: string; readonly cause?: unknown }): string => {
  const cause = error.cause as { message?: string; code?: string; errors?: ReadonlyArray<Error> } | undefined
  return cause?.message || cause?.errors?.[0]?.message || cause?.code || error.message
}

const postgresLayer = (url: Redacted.Redacted<string>) =>
  PgClient.layer({
    url,
    connectTimeout: Duration.seconds(5),
    applicationName: "order-service",
    maxConnections: 10
  }).pipe(
    Layer.tapError((error) =>
      Effect.logWarning(`Order store not reachable at ${redactDatabaseUrl(url)} (${reasonOf(error)}); retrying with backoff`)
    ),
    Layer.retry(backoff("2 seconds")),
    // The schedule never gives up; this only names the error for the signature.
    Layer.mapError((error) => new StoreStartError({ message: `Order store not reachable at ${redactDatabaseUrl(url)} (${reasonOf(error)})` }))
  )

/**
 * Replicas starting at once on a fresh PostgreSQL database can race to create the migrator's own
 * table (both see none, one create fails); a second attempt finds it and waits on its lock.
 */
const migrate = (where: string) =>
  runMigrations.pipe(
    Effect.retry({
      schedule: Schedule.exponential("50 millis").pipe(Schedule.jittered),
      times: 4,
      while: (error) => error._tag === "SqlError"
    }),
    Effect.mapError((error) =>
      new StoreStartError({ message: `The order store's migrations failed on ${where}: ${reasonOf(error)}` })
    ),
    Effect.tap((ran) =>
      Effect.when(
        Effect.logInfo(`Order store migrated (${ran.map(([id, name]) => `${id}_${name}`).join(", ")})`),
        () => ran.length > 0
      )
    )
  )

/** The order store's SQL client for an explicit target, migrated and ready. */
export const databaseLayer = (target: DatabaseTarget): Layer.Layer<SqlClient.SqlClient, StoreStartError> => {
  const where = DatabaseTarget.$match(target, {
    Sqlite: ({ filename }) => `SQLite ${filename}`,
    Postgres: ({ url }) => `PostgreSQL ${redactDatabaseUrl(url)}`
  })
  const client: Layer.Layer<SqlClient.SqlClient, StoreStartError> = DatabaseTarget.$match(target, {
    Sqlite: ({ filename }) => sqliteLayer(filename),
    Postgres: ({ url }) => postgresLayer(url)
  })
  return Layer.effectDiscard(Effect.zipRight(migrate(where), Effect.logInfo(`Order store ready (${where})`))).pipe(
    Layer.provideMerge(client)
  )
}

/** The order store's SQL client as `DATABASE_URL` says. */
export const DatabaseLive: Layer.Layer<SqlClient.SqlClient, StoreStartError | ConfigError.ConfigError> = Layer.unwrapEffect(
  Effect.map(DatabaseConfig, databaseLayer)
)
