import { type ChildProcess, spawn } from "node:child_process"
import { once } from "node:events"
import { createServer } from "node:net"
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
  /** Resolves with the first line (already printed or to come) that matches. */
  readonly waitForLine: (pattern: RegExp, timeoutMs?: number) => Effect.Effect<string>
  readonly exitCode: Effect.Effect<number | null>
}

/**
 * Runs `src/<entry>` as a user would (`tsx`), as a child process killed when the scope closes.
 * `LOG_FORMAT=json` by default, so tests can read the lines.
 */
export const spawnService = (entry: string, env: Record<string, string | number>) =>
  Effect.acquireRelease(
    Effect.sync(() => {
      const child = spawn("node_modules/.bin/tsx", [`src/${entry}`], {
        env: { ...process.env, LOG_FORMAT: "json", ...Object.fromEntries(Object.entries(env).map(([k, v]) => [k, String(v)])) },
        stdio: ["ignore", "pipe", "pipe"]
      })
      const lines: Array<string> = []
      const waiters = new Set<{ pattern: RegExp; resolve: (line: string) => void }>()
      const onData = (buffered: { rest: string }) => (chunk: Buffer) => {
        const text = buffered.rest + chunk.toString("utf8")
        const complete = text.split("\n")
        buffered.rest = complete.pop() ?? ""
        for (const line of complete) {
          lines.push(line)
          for (const waiter of waiters) {
            if (waiter.pattern.test(line)) {
              waiters.delete(waiter)
              waiter.resolve(line)
            }
          }
        }
      }
      child.stdout!.on("data", onData({ rest: "" }))
      child.stderr!.on("data", onData({ rest: "" }))
      const exited = once(child, "exit").then(([code]) => code as number | null)

      const waitForLine = (pattern: RegExp, timeoutMs = 20_000) =>
        Effect.promise(() => {
          const seen = lines.find((line) => pattern.test(line))
          if (seen !== undefined) return Promise.resolve(seen)
          return new Promise<string>((resolve, reject) => {
            const waiter = { pattern, resolve }
            waiters.add(waiter)
            setTimeout(() => {
              if (waiters.delete(waiter)) {
                reject(new Error(`${entry} printed no line matching ${pattern} within ${timeoutMs} ms:\n${lines.join("\n")}`))
              }
            }, timeoutMs)
          })
        })

      return { child, lines, waitForLine, exitCode: Effect.promise(() => exited) } satisfies ServiceProcess
    }),
    ({ child }) =>
      Effect.sync(() => {
        if (child.exitCode === null && child.signalCode === null) child.kill("SIGKILL")
      })
  )
