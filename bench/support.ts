import * as amqp from "amqplib"
import { type ChildProcess, spawn } from "node:child_process"
import { randomUUID } from "node:crypto"
import { mkdtempSync, readFileSync, rmSync } from "node:fs"
import { createServer } from "node:net"
import { tmpdir } from "node:os"
import { join } from "node:path"
import { bundle, SERVICE_ENTRIES } from "../scripts/build"
import { commandProperties } from "../src/messaging/SendNotificationCommand"
import { uuidv7 } from "../src/domain/uuidv7"
import type { SendNotificationCommand } from "../src/messaging/SendNotificationCommand"

export const AMQP_URL = (process.env.AMQP_URL ?? "amqp://guest:guest@localhost:5672").split(",")[0]!.trim()
export const ROOT = new URL("..", import.meta.url).pathname

export const sleep = (ms: number) => new Promise<void>((resolve) => setTimeout(resolve, ms))

/** A port nobody listens on right now (never the services' defaults, 3000 and 3001). */
export const freePort = () =>
  new Promise<number>((resolve, reject) => {
    const server = createServer()
    server.once("error", reject)
    server.listen(0, "127.0.0.1", () => {
      const { port } = server.address() as { port: number }
      server.close(() => resolve(port))
    })
  })

export const uniqueQueue = (label: string) => `bench.${label}.${randomUUID().slice(0, 8)}`

// ---------------------------------------------------------------------------------------------
// Child processes: every service the benchmark starts is tracked here, so that `stopAll` can end
// them whatever happened.

const children = new Set<ChildProcess>()

export interface Service {
  readonly pid: number
  /** Resolves when a line of output matches, with the time it arrived. */
  readonly waitForLine: (pattern: RegExp, timeoutMs: number) => Promise<number>
  /** Called with each line of output and the time it arrived. */
  onLine: (line: string, at: number) => void
  /** Peak resident set size so far (VmHWM), in MB. */
  readonly peakRssMb: () => number
  /** SIGTERM, then SIGKILL if it has not exited within `graceMs`. */
  readonly stop: (graceMs?: number) => Promise<number | null>
  readonly output: () => string
}

// ---------------------------------------------------------------------------------------------
// Runners: how a TypeScript entry point is started, the same way for the project and the baseline.

export interface Runner {
  readonly name: string
  /** `node`'s arguments that run `entry` (a path like src/order/main.ts). */
  readonly nodeArguments: (entry: string) => ReadonlyArray<string>
  readonly cleanUp: () => void
}

const BASELINE_ENTRIES = ["bench/baseline/order-service.ts", "bench/baseline/notification-service.ts"] as const

/**
 * The node options (GC flags) the project's npm script for `entry`'s service starts it with, as
 * the Docker image does too; the baseline runs with none, as the original did.
 */
export const nodeOptionsFor = (entry: string): ReadonlyArray<string> => {
  const script = { "src/order/main.ts": "start:order", "src/notification/main.ts": "start:notification" }[entry]
  if (script === undefined) return []
  // The script's node flags (`--flag` or `--flag=value`): the words after `node`, up to
  // `--import tsx` or the entry point.
  const words = npmScripts[script]!.split(/\s+/)
  const afterNode = words.slice(words.indexOf("node") + 1)
  return afterNode.slice(0, afterNode.findIndex((word) => !word.startsWith("--") || word === "--import"))
}

const npmScripts = (JSON.parse(readFileSync(`${ROOT}package.json`, "utf8")) as { scripts: Record<string, string> }).scripts

/**
 * `bundle`: both systems built as `npm run build` builds the services, and run by plain `node`, as
 * `npm run start:built` and the Docker image run them. `tsx`: as `npm start` runs them, with
 * `node --import tsx <entry>` (not the tsx CLI, so that the pid is the service's own process,
 * whose memory we read).
 */
export const prepareRunner = async (kind: "bundle" | "tsx"): Promise<Runner> => {
  if (kind === "tsx") {
    return {
      name: "tsx (as npm start)",
      nodeArguments: (entry) => [...nodeOptionsFor(entry), "--import", "tsx", entry],
      cleanUp: () => undefined
    }
  }
  const outdir = mkdtempSync(join(tmpdir(), "bench-build-"))
  await bundle(SERVICE_ENTRIES, { outbase: "src", outdir: join(outdir, "src") })
  await bundle(BASELINE_ENTRIES, { outbase: "bench/baseline", outdir: join(outdir, "bench/baseline") })
  return {
    name: "bundle (as npm run build, then node; as the Docker image)",
    nodeArguments: (entry) => [...nodeOptionsFor(entry), join(outdir, entry.replace(/\.ts$/, ".mjs"))],
    cleanUp: () => rmSync(outdir, { recursive: true, force: true })
  }
}

/** Starts a service's entry point with `runner`; its output is watched line by line. */
export const startService = (runner: Runner, entry: string, env: Record<string, string>): Service => {
  const child = spawn(process.execPath, runner.nodeArguments(entry), {
    cwd: ROOT,
    env: { ...process.env, ...env },
    stdio: ["ignore", "pipe", "pipe"]
  })
  children.add(child)
  const exited = new Promise<number | null>((resolve) => child.once("exit", (code) => resolve(code)))
  exited.then(() => children.delete(child))
  let tail = ""
  let partial = ""
  const waiters: Array<{ pattern: RegExp; resolve: (at: number) => void }> = []
  const service: Service = {
    pid: child.pid!,
    onLine: () => undefined,
    waitForLine: (pattern, timeoutMs) =>
      new Promise<number>((resolve, reject) => {
        const timer = setTimeout(
          () => reject(new Error(`${entry}: no line matching ${pattern} within ${timeoutMs} ms\n${tail}`)),
          timeoutMs
        )
        waiters.push({ pattern, resolve: (at) => (clearTimeout(timer), resolve(at)) })
      }),
    peakRssMb: () => {
      const status = readFileSync(`/proc/${child.pid}/status`, "utf8")
      return Number(/VmHWM:\s+(\d+) kB/.exec(status)?.[1] ?? NaN) / 1024
    },
    stop: async (graceMs = 15_000) => {
      if (child.exitCode !== null || child.signalCode !== null) return child.exitCode
      child.kill("SIGTERM")
      const timer = setTimeout(() => child.kill("SIGKILL"), graceMs)
      const code = await exited
      clearTimeout(timer)
      return code
    },
    output: () => tail
  }
  const onData = (chunk: Buffer) => {
    const at = performance.now()
    const text = partial + chunk.toString("utf8")
    const lines = text.split("\n")
    partial = lines.pop()!
    for (const line of lines) {
      service.onLine(line, at)
      for (let i = waiters.length - 1; i >= 0; i--) {
        if (waiters[i]!.pattern.test(line)) waiters.splice(i, 1)[0]!.resolve(at)
      }
    }
    // Keep the last few KB for error messages.
    tail = (tail + chunk.toString("utf8")).slice(-4000)
  }
  child.stdout!.on("data", onData)
  child.stderr!.on("data", onData)
  return service
}

export const stopAll = async () => {
  for (const child of children) child.kill("SIGKILL")
  children.clear()
}

/** Polls a URL until it answers 200. */
export const waitForHttp = async (url: string, timeoutMs: number) => {
  const deadline = Date.now() + timeoutMs
  for (;;) {
    try {
      if ((await fetch(url)).status === 200) return
    } catch {
      // not listening yet
    }
    if (Date.now() > deadline) throw new Error(`${url} did not answer 200 within ${timeoutMs} ms`)
    await sleep(100)
  }
}

// ---------------------------------------------------------------------------------------------
// The benchmark's own broker connection: declares and pre-fills queues, and deletes every queue
// it was told about when the run ends.

export interface Broker {
  readonly version: string
  readonly declare: (queue: string, args: Record<string, unknown>) => Promise<void>
  readonly prefill: (queue: string, count: number) => Promise<void>
  readonly messageCount: (queue: string) => Promise<number>
  /** Remembers a queue (a service declares it) so that `close` deletes it. */
  readonly track: (queue: string) => void
  readonly deleteQueue: (queue: string) => Promise<void>
  readonly close: () => Promise<void>
}

export const connectBroker = async (): Promise<Broker> => {
  const connection = await amqp.connect(AMQP_URL, { noDelay: true })
  const channel = await connection.createConfirmChannel()
  const queues = new Set<string>()
  const deleteQueue = async (queue: string) => {
    // A fresh channel each time: a failed delete closes the channel it ran on.
    const ch = await connection.createChannel()
    ch.on("error", () => undefined)
    await ch.deleteQueue(queue).catch(() => undefined)
    await ch.close().catch(() => undefined)
    queues.delete(queue)
  }
  const server = (connection as unknown as { connection: { serverProperties: { version?: string } } }).connection
  return {
    version: server.serverProperties.version ?? "unknown",
    declare: async (queue, args) => {
      queues.add(queue)
      await channel.assertQueue(queue, { durable: true, arguments: args })
    },
    // The same message for both systems: the command body and properties the project publishes.
    prefill: async (queue, count) => {
      const BATCH = 2000
      for (let sent = 0; sent < count; ) {
        for (const end = Math.min(count, sent + BATCH); sent < end; sent++) {
          const command = { orderId: uuidv7(), userId: 42 } as SendNotificationCommand
          channel.sendToQueue(queue, Buffer.from(JSON.stringify(command)), commandProperties(command, "bench"))
        }
        await channel.waitForConfirms()
      }
    },
    messageCount: async (queue) => (await channel.checkQueue(queue)).messageCount,
    track: (queue) => void queues.add(queue),
    deleteQueue,
    close: async () => {
      for (const queue of [...queues]) await deleteQueue(queue)
      await connection.close().catch(() => undefined)
    }
  }
}

export const median = (values: ReadonlyArray<number>) => {
  const sorted = [...values].sort((a, b) => a - b)
  const mid = Math.floor(sorted.length / 2)
  return sorted.length % 2 === 1 ? sorted[mid]! : (sorted[mid - 1]! + sorted[mid]!) / 2
}
