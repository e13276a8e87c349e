import { Effect } from "effect"
import { execFile } from "node:child_process"
import { mkdtempSync, rmSync } from "node:fs"
import { tmpdir } from "node:os"
import { join } from "node:path"
import { promisify } from "node:util"
import { freePort } from "./processes"

const run = promisify(execFile)
const BIN = process.env.PG_BIN ?? "/usr/lib/postgresql/15/bin"

/** Runs a PostgreSQL tool as the `postgres` user: the server refuses to run as root. */
const asPostgres = (tool: string, ...args: ReadonlyArray<string>) =>
  (process.getuid?.() === 0
    ? run("runuser", ["-u", "postgres", "--", join(BIN, tool), ...args], { timeout: 60_000 })
    : run(join(BIN, tool), [...args], { timeout: 60_000 })).then(({ stdout }) => stdout)

/**
 * A PostgreSQL server of the fault suite's own, in a fresh directory on a free port, so that a test
 * can stop and start it without touching the shared server on 5432. Stopped and removed with the scope.
 */
export const privatePostgres = Effect.gen(function*() {
  const port = yield* freePort
  const dir = mkdtempSync(join(tmpdir(), "postgres-fault-"))
  if (process.getuid?.() === 0) yield* Effect.promise(() => run("chown", ["postgres:postgres", dir]))
  const data = join(dir, "data")
  const ctl = (...args: ReadonlyArray<string>) =>
    Effect.promise(() => asPostgres("pg_ctl", "-D", data, "-w", "-t", "60", ...args))
  yield* Effect.acquireRelease(
    Effect.promise(() => asPostgres("initdb", "-D", data, "-A", "trust", "-U", "postgres", "--no-sync")).pipe(
      Effect.zipRight(ctl("-o", `-p ${port} -k ${dir} -c listen_addresses=127.0.0.1 -c fsync=off`, "-l", join(dir, "log"), "start"))
    ),
    () =>
      Effect.tryPromise(() => asPostgres("pg_ctl", "-D", data, "-w", "-m", "immediate", "stop")).pipe(
        Effect.ignore,
        Effect.zipRight(Effect.sync(() => rmSync(dir, { recursive: true, force: true })))
      )
  )
  return {
    url: `postgres://postgres@127.0.0.1:${port}/postgres`,
    /** SIGQUIT-like: the server goes away at once, as in a crash. */
    stop: ctl("-m", "immediate", "stop"),
    start: ctl("-o", `-p ${port} -k ${dir} -c listen_addresses=127.0.0.1 -c fsync=off`, "-l", join(dir, "log"), "start")
  }
})
