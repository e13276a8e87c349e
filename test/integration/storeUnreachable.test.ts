import { describe, expect, it } from "@effect/vitest"
import { ConfigProvider, Effect, Fiber, Layer } from "effect"
import { DatabaseLive } from "../../src/order/store/Database"
import { eventually } from "../support/broker"
import { recordingLogger } from "../support/logs"

const TEST_DATABASE_URL = new URL(process.env.TEST_DATABASE_URL ?? "postgres://postgres@127.0.0.1:5432/test")

/** Builds the store's layer against `url` in the background, logging into `logs`. */
const startStore = (url: string, logs: ReturnType<typeof recordingLogger>) =>
  Effect.forkScoped(Layer.launch(DatabaseLive).pipe(
    Effect.provide(logs.layer),
    Effect.withConfigProvider(ConfigProvider.fromMap(new Map([["DATABASE_URL", url]])))
  ))

describe("an order store that refuses the service", () => {
  it.scopedLive("a PostgreSQL that refuses the login: one line per attempt, password masked, retried with backoff", () =>
    Effect.gen(function*() {
      const logs = recordingLogger()
      // A role that does not exist: the server answers, and refuses.
      const url = `postgres://no_such_role:s3cret@${TEST_DATABASE_URL.host}${TEST_DATABASE_URL.pathname}`
      const fiber = yield* startStore(url, logs)
      const lines = yield* eventually(
        () => Promise.resolve(logs.lines.filter((line) => line.startsWith("Order store not reachable"))),
        (found) => found.length >= 2,
        { what: "two refused attempts" }
      )
      for (const line of lines) {
        expect(line).toMatch(/^Order store not reachable at postgres:\/\/no_such_role:\*\*\*@[^ ]+ \(.*no_such_role.*\); retrying with backoff$/)
        expect(line).not.toContain("s3cret")
        expect(line).not.toContain("\n")
      }
      // Still retrying, not failed: the service waits for the database.
      expect(fiber.unsafePoll()).toBeNull()
      yield* Fiber.interrupt(fiber)
    }))

  it.scopedLive("a port where nothing listens: the same line, retried", () =>
    Effect.gen(function*() {
      const logs = recordingLogger()
      const fiber = yield* startStore("postgres://postgres:pw@127.0.0.1:1/test", logs)
      yield* eventually(
        () => Promise.resolve(logs.lines.filter((line) => /^Order store not reachable at postgres:\/\/postgres:\*\*\*@127\.0\.0\.1:1\/test \(.+\); retrying with backoff$/.test(line))),
        (found) => found.length >= 2,
        { what: "two refused attempts" }
      )
      expect(logs.lines.join("\n")).not.toContain(":pw@")
      yield* Fiber.interrupt(fiber)
    }))
})
