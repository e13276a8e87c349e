import * as amqp from "amqplib"
import { type ChildProcess, spawn, spawnSync } from "node:child_process"
import { randomUUID } from "node:crypto"
import { mkdirSync, mkdtempSync, readFileSync, rmSync } from "node:fs"
import { createServer } from "node:net"
import { join } from "node:path"
import { bundle, SERVICE_ENTRIES } from "../scripts/build"
import { commandProperties } from "../src/contracts/SendNotificationCommand"
import { uuidv7 } from "../src/domain/uuidv7"
import type { SendNotificationCommand } from "../src/contracts/SendNotificationCommand"
import { EVENTS_EXCHANGE } from "../src/contracts/NotificationEvents"
import { workQueueArguments } from "../src/messaging/QueueTopology"

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
  const script = { "src/main.ts": "start", "src/order/main.ts": "start:order", "src/notification/main.ts": "start:notification" }[entry]
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
 * `npm start` and the Docker image run them. `tsx`: as `npm run start:order` and `start:notification`
 * run them, with `node --import tsx <entry>` (not the tsx CLI, so that the pid is the service's own
 * process, whose memory we read).
 */
export const prepareRunner = async (kind: "bundle" | "tsx"): Promise<Runner> => {
  if (kind === "tsx") {
    return {
      name: "tsx (as npm run start:order)",
      nodeArguments: (entry) => [...nodeOptionsFor(entry), "--import", "tsx", entry],
      cleanUp: () => undefined
    }
  }
  // Inside the repository (bench/results/ is git-ignored), so that better-sqlite3, which the bundle
  // leaves external, is found in its node_modules.
  mkdirSync(`${ROOT}bench/results`, { recursive: true })
  const outdir = mkdtempSync(`${ROOT}bench/results/.build-`)
  await bundle(SERVICE_ENTRIES, { outbase: "src", outdir: join(outdir, "src") })
  await bundle(BASELINE_ENTRIES, { outbase: "bench/baseline", outdir: join(outdir, "bench/baseline") })
  return {
    name: "bundle (as npm start and the Docker image)",
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
// The benchmark's own virtual host. The notification service publishes an event per command to the
// `notification.events` exchange, whose name is fixed: in a shared vhost, every drain run's events
// would also land in whatever queues others have bound to it (an order service's default
// `order_service.notification_events`, someone's test). On this machine's broker (rabbitmqctl works)
// the benchmark therefore runs in a vhost of its own, deleted at the end with all it holds.

export interface Vhost {
  /** The broker URL every service and the benchmark's own connection use. */
  readonly url: string
  /** What was chosen, for the report. */
  readonly description: string
  readonly remove: () => void
}

const rabbitmqctl = (...args: ReadonlyArray<string>) => {
  const run = spawnSync("rabbitmqctl", args, { encoding: "utf8", timeout: 60_000 })
  if (run.error !== undefined || run.status !== 0) throw new Error(`rabbitmqctl ${args.join(" ")}: ${run.error?.message ?? run.stderr.trim()}`)
}

/** `BENCH_VHOST=shared` keeps AMQP_URL's vhost; otherwise one of the benchmark's own, where it can make one. */
export const prepareVhost = (): Vhost => {
  const shared = (why: string): Vhost => ({
    url: AMQP_URL,
    description: `AMQP_URL's vhost (${why}): events also reach any queue others bound to notification.events`,
    remove: () => undefined
  })
  if (process.env.BENCH_VHOST === "shared") return shared("BENCH_VHOST=shared")
  const url = new URL(AMQP_URL)
  if (!["localhost", "127.0.0.1", "[::1]"].includes(url.hostname)) return shared("the broker is not this machine's")
  const vhost = `bench-${randomUUID().slice(0, 8)}`
  try {
    rabbitmqctl("add_vhost", vhost)
    rabbitmqctl("set_permissions", "-p", vhost, decodeURIComponent(url.username || "guest"), ".*", ".*", ".*")
  } catch (error) {
    try {
      rabbitmqctl("delete_vhost", vhost)
    } catch {
      // it was never made
    }
    return shared(`no vhost of its own: ${(error as Error).message.split("\n")[0]}`)
  }
  url.pathname = `/${encodeURIComponent(vhost)}`
  let removed = false
  return {
    url: url.toString(),
    description: `a vhost of its own (${vhost}), deleted at the end`,
    remove: () => {
      if (removed) return
      removed = true
      try {
        rabbitmqctl("delete_vhost", vhost)
      } catch (error) {
        console.error(`could not delete the vhost ${vhost}: ${(error as Error).message}`)
      }
    }
  }
}

// ---------------------------------------------------------------------------------------------
// The benchmark's own broker connection: declares and pre-fills queues, and deletes every queue
// it was told about when the run ends.

export interface Broker {
  readonly version: string
  readonly declare: (queue: string, args: Record<string, unknown>) => Promise<void>
  readonly prefill: (queue: string, count: number) => Promise<void>
  /** Declares `queue` as the order service does its events queue, bound to the events exchange. */
  readonly bindEvents: (queue: string) => Promise<void>
  readonly messageCount: (queue: string) => Promise<number>
  /** Remembers a queue (a service declares it) so that `close` deletes it. */
  readonly track: (queue: string) => void
  readonly deleteQueue: (queue: string) => Promise<void>
  readonly close: () => Promise<void>
}

export const connectBroker = async (url: string): Promise<Broker> => {
  const connection = await amqp.connect(url, { noDelay: true })
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
          channel.sendToQueue(queue, Buffer.from(JSON.stringify(command)), commandProperties(command.orderId, "bench"))
        }
        await channel.waitForConfirms()
      }
    },
    bindEvents: async (queue) => {
      queues.add(queue)
      await channel.assertExchange(EVENTS_EXCHANGE, "topic", { durable: true })
      await channel.assertQueue(queue, { durable: true, arguments: workQueueArguments(queue) })
      await channel.bindQueue(queue, EVENTS_EXCHANGE, "notification.*")
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
