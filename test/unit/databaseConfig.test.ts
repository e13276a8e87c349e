import { describe, expect, it } from "@effect/vitest"
import { ConfigProvider, Effect, Redacted } from "effect"
import { describeConfigError } from "../../src/config/Env"
import { DatabaseConfig, redactDatabaseUrl } from "../../src/order/store/Database"

const read = (env: Record<string, string>) =>
  Effect.withConfigProvider(DatabaseConfig, ConfigProvider.fromMap(new Map(Object.entries(env))))

const readFailure = (env: Record<string, string>) => Effect.map(Effect.flip(read(env)), describeConfigError)

describe("DATABASE_URL", () => {
  it.effect("unset or empty is the embedded SQLite file data/orders.db", () =>
    Effect.gen(function*() {
      expect(yield* read({})).toEqual({ _tag: "Sqlite", filename: "data/orders.db" })
      expect(yield* read({ DATABASE_URL: "  " })).toEqual({ _tag: "Sqlite", filename: "data/orders.db" })
    }))

  it.effect("a path is a SQLite file", () =>
    Effect.gen(function*() {
      expect(yield* read({ DATABASE_URL: "/var/lib/orders/orders.db" })).toEqual({
        _tag: "Sqlite",
        filename: "/var/lib/orders/orders.db"
      })
      expect(yield* read({ DATABASE_URL: "tmp/o.db" })).toEqual({ _tag: "Sqlite", filename: "tmp/o.db" })
    }))

  it.effect("file:PATH is a SQLite file", () =>
    Effect.gen(function*() {
      expect(yield* read({ DATABASE_URL: "file:data/x.db" })).toEqual({ _tag: "Sqlite", filename: "data/x.db" })
      expect(yield* read({ DATABASE_URL: "file:///srv/orders.db" })).toEqual({ _tag: "Sqlite", filename: "/srv/orders.db" })
    }))

  it.effect("postgres:// and postgresql:// are PostgreSQL, the URL kept redacted", () =>
    Effect.gen(function*() {
      for (const url of ["postgres://app:pw@db:5432/orders", "postgresql://app:pw@db/orders?sslmode=require"]) {
        const target = yield* read({ DATABASE_URL: url })
        expect(target._tag).toBe("Postgres")
        if (target._tag !== "Postgres") return
        expect(Redacted.isRedacted(target.url)).toBe(true)
        expect(Redacted.value(target.url)).toBe(url)
        expect(String(target.url)).not.toContain("pw")
      }
    }))

  it.effect("another scheme is one line naming the variable, with the password masked", () =>
    Effect.gen(function*() {
      expect(yield* readFailure({ DATABASE_URL: "mysql://x" })).toBe(
        `Invalid configuration: DATABASE_URL must be a SQLite path, file:PATH, or a postgres:// or postgresql:// URL (got "mysql://x")`
      )
      const line = yield* readFailure({ DATABASE_URL: "mysql://u:secret@x" })
      expect(line).toContain(`(got "mysql://u:***@x")`)
      expect(line).not.toContain("secret")
      expect(line).not.toContain("\n")
      // Neither an empty file: nor a PostgreSQL URL that does not parse is taken.
      expect(yield* readFailure({ DATABASE_URL: "file:" })).toContain("DATABASE_URL must be")
      expect(yield* readFailure({ DATABASE_URL: "postgres://u:pw@[::1" })).toContain(`(got "postgres://u:***@[::1")`)
    }))
})

describe("redactDatabaseUrl", () => {
  it("hides the password, also one containing @, and a password parameter", () => {
    expect(redactDatabaseUrl("postgres://postgres:pw@127.0.0.1:5432/test")).toBe("postgres://postgres:***@127.0.0.1:5432/test")
    expect(redactDatabaseUrl(Redacted.make("postgres://u:p@ss@h/db"))).toBe("postgres://u:***@h/db")
    expect(redactDatabaseUrl("postgres://h/db?user=u&password=pw&sslmode=require")).toBe(
      "postgres://h/db?user=u&password=***&sslmode=require"
    )
    expect(redactDatabaseUrl("postgres://postgres@127.0.0.1/test")).toBe("postgres://postgres@127.0.0.1/test")
  })
})
