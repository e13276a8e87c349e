import { type ChildProcess, spawn } from "node:child_process"
import { once } from "node:events"
import { mkdtempSync, rmSync } from "node:fs"
import { createServer } from "node:net"
import { tmpdir } from "node:os"
import { join } from "node:path"
import { Effect } from "effect"

/** A port nobody listens on right now (never 3000/3001, which a running service may hold). */
export const freePort = Effect.promise(
  () =>
    new Promise<number>((resolve, reject) => {
      const server = createServer()
      server.once("error", reject)
      server.listen(0, "127.0.0.1", () => {
        const { port } = server.address() as { port: number }
        server.close(() => resolve(port))
      })
    })
)

export interface ServiceProcess {
  readonly child: ChildProcess
  /** Every line the service printed so far, stdout and stderr. */
  readonly lines: ReadonlyArray<string>
  /** Resolves with the `count`th line (already printed or to come) that matches; 1 by default. */
  readonly waitForLine: (pattern: RegExp, options?: { readonly count?: number; readonly timeoutMs?: number }) => Effect.Effect<string>
  readonly exitCode: Effect.Effect<number | null>
}

/**
 * Runs `src/<entry>` as `npm run start:order` does (`node --import tsx`), as a child process killed when the
 * scope closes. Not through the `tsx` CLI: that wrapper relays a signal and, if the busy child has
 * not acknowledged it within 30 ms, kills it outright, which defeats a graceful shutdown under load.
 * `LOG_FORMAT=json` by default, so tests can read the lines. An order service gets a SQLite store
 * of its own (removed with the scope) unless `DATABASE_URL` is given, and reads its events from
 * `<COMMAND_QUEUE>.events`, so that no two tests share a store or an events queue.
 */
export const spawnService = (entry: string, env: Record<string, string | number>) =>
  Effect.acquireRelease(
    Effect.sync(() => {
      const storeFolder = mkdtempSync(join(tmpdir(), "orders-process-"))
      const defaults = {
        LOG_FORMAT: "json",
        DATABASE_URL: join(storeFolder, "orders.db"),
        ...(env["COMMAND_QUEUE"] === undefined ? {} : { ORDER_EVENTS_QUEUE: `${env["COMMAND_QUEUE"]}.events` })
      }
      const child = spawn(process.execPath, ["--import", "tsx", `src/${entry}`], {
        env: { ...process.env, ...defaults, ...Object.fromEntries(Object.entries(env).map(([k, v]) => [k, String(v)])) },
        stdio: ["ignore", "pipe", "pipe"]
      })
      const lines: Array<string> = []
      const waiters = new Set<() => void>()
      const onData = (buffered: { rest: string }) => (chunk: Buffer) => {
        const text = buffered.rest + chunk.toString("utf8")
        const complete = text.split("\n")
        buffered.rest = complete.pop() ?? ""
        lines.push(...complete)
        for (const check of waiters) check()
      }
      child.stdout!.on("data", onData({ rest: "" }))
      child.stderr!.on("data", onData({ rest: "" }))
      const exited = once(child, "exit").then(([code]) => code as number | null)

      const waitForLine = (pattern: RegExp, options: { readonly count?: number; readonly timeoutMs?: number } = {}) =>
        Effect.promise(() =>
          new Promise<string>((resolve, reject) => {
            const count = options.count ?? 1
            const timeoutMs = options.timeoutMs ?? 20_000
            const check = () => {
              const matching = lines.filter((line) => pattern.test(line))
              if (matching.length < count) return
              waiters.delete(check)
              clearTimeout(timer)
              resolve(matching[count - 1]!)
            }
            const timer = setTimeout(() => {
              waiters.delete(check)
              reject(new Error(`${entry} printed no ${count}th line matching ${pattern} within ${timeoutMs} ms:\n${lines.join("\n")}`))
            }, timeoutMs)
            waiters.add(check)
            check()
          })
        )

      return { child, lines, waitForLine, exitCode: Effect.promise(() => exited), storeFolder } satisfies ServiceProcess & {
        readonly storeFolder: string
      }
    }),
    ({ child, storeFolder }) =>
      Effect.promise(async () => {
        if (child.exitCode === null && child.signalCode === null) {
          child.kill("SIGKILL")
          await once(child, "exit")
        }
        rmSync(storeFolder, { recursive: true, force: true })
      })
  )

/** What a command-line tool did: its exit code and everything it printed. */
export interface ToolRun {
  readonly code: number | null
  readonly stdout: string
  readonly stderr: string
}

/** Runs an operator's tool (`src/<tool>/main.ts`) as `npm run <tool>` would, to its exit. */
export const runTool = (tool: "dlq" | "topology" | "verify", args: ReadonlyArray<string>, env: Record<string, string> = {}) =>
  Effect.promise(() =>
    new Promise<ToolRun>((resolve, reject) => {
      const child = spawn(process.execPath, ["--import", "tsx", `src/${tool}/main.ts`, ...args], {
        env: { ...process.env, ...env },
        stdio: ["ignore", "pipe", "pipe"]
      })
      let stdout = ""
      let stderr = ""
      child.stdout!.on("data", (chunk: Buffer) => (stdout += chunk.toString("utf8")))
      child.stderr!.on("data", (chunk: Buffer) => (stderr += chunk.toString("utf8")))
      child.on("error", reject)
      child.on("close", (code) => resolve({ code, stdout, stderr }))
    })
  )
