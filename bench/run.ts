/**
 * `npm run bench`: the project against a baseline of the original design (bench/baseline/), side
 * by side on this machine. Both run as child processes, started the same way (BENCH_RUNNER: `bundle`
 * as the Docker image runs them, the default, or `tsx` as `npm start` does), each on a queue of its
 * own; the HTTP load comes from wrk over loopback (autocannon if wrk is not installed).
 *
 * Measured alternately (project, baseline, then baseline, project, ...) so that drift in the
 * machine's load hits both alike; each ratio is taken within a round, and we report medians.
 *
 * Knobs: BENCH_RUNNER (bundle), BENCH_ROUNDS (5), BENCH_DURATION (10 s per HTTP run), BENCH_WARMUP (3 s),
 * BENCH_DRAIN_MESSAGES (40000), BENCH_SKIP (comma list of: orders, drain, scaling).
 * Quick look: BENCH_ROUNDS=1 BENCH_DURATION=4 BENCH_DRAIN_MESSAGES=5000 npm run bench
 */
import { mkdirSync, writeFileSync } from "node:fs"
import { cpus, loadavg, totalmem } from "node:os"
import { commandQueueArguments, deadLetterQueueOf } from "../src/messaging/CommandTopology"
import { chooseLoad, type LoadResult } from "./load"
import {
  type Broker,
  connectBroker,
  freePort,
  median,
  prepareRunner,
  ROOT,
  type Runner,
  type Service,
  startService,
  stopAll,
  uniqueQueue,
  waitForHttp
} from "./support"

const envInt = (name: string, fallback: number) => {
  const value = Number(process.env[name] ?? fallback)
  if (!Number.isInteger(value) || value < 1) throw new Error(`${name} must be a positive integer`)
  return value
}

const ROUNDS = envInt("BENCH_ROUNDS", 5)
const DURATION_S = envInt("BENCH_DURATION", 10)
const WARMUP_S = envInt("BENCH_WARMUP", 3)
const DRAIN_MESSAGES = envInt("BENCH_DRAIN_MESSAGES", 40_000)
const SKIP = new Set((process.env.BENCH_SKIP ?? "").split(",").map((s) => s.trim()))
const RUNNER = process.env.BENCH_RUNNER ?? "bundle"
if (RUNNER !== "bundle" && RUNNER !== "tsx") throw new Error("BENCH_RUNNER must be bundle or tsx")
const load = chooseLoad()
const CONNECTIONS = 50
const DRAIN_PREFETCHES = [1, 100, 1000] as const
const SCALING_PREFETCHES = [1, 50, 100, 200] as const
const SCALING_WAVES = 10
const SEND_LINE = "Sending notification for order"

type System = "project" | "baseline"

const SYSTEMS = {
  project: {
    order: "src/order/main.ts",
    consumer: "src/notification/main.ts",
    // The project declares this itself; the benchmark declares it identically to pre-fill it.
    queueArguments: commandQueueArguments,
    waitUntilReady: (service: Service, port: number) => waitForHttp(`http://127.0.0.1:${port}/health/ready`, 30_000).then(() => service)
  },
  baseline: {
    order: "bench/baseline/order-service.ts",
    consumer: "bench/baseline/notification-service.ts",
    queueArguments: (_queue: string) => ({ "x-queue-type": "quorum" }),
    waitUntilReady: (service: Service, _port: number) => service.waitForLine(/running on port/, 30_000).then(() => service)
  }
} as const

/** project first in odd rounds, baseline first in even ones. */
const orderOfRound = (round: number): ReadonlyArray<System> =>
  round % 2 === 1 ? ["project", "baseline"] : ["baseline", "project"]

interface OrdersRun extends LoadResult {
  readonly peakRssMb: number
}

const measureOrders = async (broker: Broker, runner: Runner, system: System): Promise<OrdersRun> => {
  const queue = uniqueQueue(`${system}.orders`)
  broker.track(queue)
  broker.track(deadLetterQueueOf(queue))
  const port = await freePort()
  const service = startService(runner, SYSTEMS[system].order, { PORT: String(port), COMMAND_QUEUE: queue })
  try {
    await SYSTEMS[system].waitUntilReady(service, port)
    const url = `http://127.0.0.1:${port}/orders`
    await load.postOrders(url, { connections: CONNECTIONS, durationS: WARMUP_S })
    const result = await load.postOrders(url, { connections: CONNECTIONS, durationS: DURATION_S })
    return { ...result, peakRssMb: service.peakRssMb() }
  } finally {
    await service.stop()
    await broker.deleteQueue(queue)
    await broker.deleteQueue(deadLetterQueueOf(queue))
  }
}

interface DrainRun {
  readonly commandsPerSecond: number
  readonly messages: number
  /** Messages in the queue after the consumer stopped: should be 0 (everything acked). */
  readonly leftAfterStop: number
}

/**
 * Pre-fills a queue, starts the consumer and times its send log lines from the first to the last.
 * With a send delay, lines come in waves of `prefetch`: the first wave starts the clock, so it is
 * not counted.
 */
const measureDrain = async (
  broker: Broker,
  runner: Runner,
  system: System,
  options: { readonly prefetch: number; readonly messages: number; readonly sendDelayMs: number }
): Promise<DrainRun> => {
  const { messages, prefetch, sendDelayMs } = options
  const queue = uniqueQueue(`${system}.drain`)
  await broker.declare(deadLetterQueueOf(queue), { "x-queue-type": "quorum" })
  await broker.declare(queue, SYSTEMS[system].queueArguments(queue))
  await broker.prefill(queue, messages)
  const port = await freePort()
  let seen = 0
  let first = 0
  let last = 0
  let resolveDone: () => void = () => undefined
  const done = new Promise<void>((resolve) => (resolveDone = resolve))
  const service = startService(runner, SYSTEMS[system].consumer, {
    COMMAND_QUEUE: queue,
    NOTIFICATION_PREFETCH: String(prefetch),
    NOTIFICATION_SEND_DELAY_MS: String(sendDelayMs),
    NOTIFICATION_HEALTH_PORT: String(port)
  })
  service.onLine = (line, at) => {
    if (!line.includes(SEND_LINE)) return
    if (seen++ === 0) first = at
    last = at
    if (seen >= messages) resolveDone()
  }
  try {
    const timeoutMs = 60_000 + messages * Math.max(sendDelayMs, 5)
    let timer: NodeJS.Timeout | undefined
    await Promise.race([
      done,
      new Promise<never>((_, reject) => {
        timer = setTimeout(() => reject(new Error(`${system} drained ${seen} of ${messages} in time\n${service.output()}`)), timeoutMs)
      })
    ]).finally(() => clearTimeout(timer))
    const counted = sendDelayMs > 0 ? messages - prefetch : messages - 1
    const commandsPerSecond = (counted / (last - first)) * 1000
    await service.stop()
    return { commandsPerSecond, messages, leftAfterStop: await broker.messageCount(queue) }
  } finally {
    await service.stop()
    await broker.deleteQueue(queue)
    await broker.deleteQueue(deadLetterQueueOf(queue))
  }
}

const log = (line: string) => console.log(`[bench ${new Date().toISOString().slice(11, 19)}] ${line}`)
const fmt = (value: number, digits = 0) => value.toLocaleString("en-US", { maximumFractionDigits: digits, minimumFractionDigits: digits })

interface Row {
  readonly metric: string
  readonly project: string
  readonly baseline: string
  readonly ratio: string
  readonly target: string
  readonly met: string
}

const printTable = (rows: ReadonlyArray<Row>) => {
  const header: Row = { metric: "metric", project: "project", baseline: "baseline", ratio: "ratio (median of pairs)", target: "target", met: "met" }
  const keys = Object.keys(header) as Array<keyof Row>
  const widths = keys.map((key) => Math.max(...[header, ...rows].map((row) => row[key].length)))
  const line = (row: Row) => `| ${keys.map((key, i) => row[key].padEnd(widths[i]!)).join(" | ")} |`
  console.log(line(header))
  console.log(`| ${widths.map((w) => "-".repeat(w)).join(" | ")} |`)
  for (const row of rows) console.log(line(row))
}

const main = async () => {
  const broker = await connectBroker()
  const runner = await prepareRunner(RUNNER)
  const startedAt = new Date()
  const loadBefore = loadavg()
  const orders: Record<System, Array<OrdersRun>> = { project: [], baseline: [] }
  const drain: Record<System, Record<number, Array<DrainRun>>> = { project: {}, baseline: {} }
  const scaling: Record<number, Array<DrainRun>> = {}
  const onSignal = () => {
    log("interrupted; stopping services and deleting queues")
    void stopAll().then(() => broker.close()).finally(() => {
      runner.cleanUp()
      process.exit(130)
    })
  }
  process.once("SIGINT", onSignal)
  process.once("SIGTERM", onSignal)
  try {
    log(`Services run by ${runner.name}; HTTP load from ${load.name}`)
    log(`RabbitMQ ${broker.version}; ${ROUNDS} round(s); load average ${loadBefore.map((l) => l.toFixed(2)).join(" ")}`)
    for (let round = 1; round <= ROUNDS; round++) {
      for (const system of orderOfRound(round)) {
        if (SKIP.has("orders")) break
        const run = await measureOrders(broker, runner, system)
        orders[system].push(run)
        log(`round ${round} ${system} POST /orders: ${fmt(run.requestsPerSecond)} req/s, p50 ${run.p50Ms} ms, p99 ${run.p99Ms} ms, ${run.errors} errors, peak RSS ${fmt(run.peakRssMb)} MB`)
      }
      for (const prefetch of DRAIN_PREFETCHES) {
        if (SKIP.has("drain")) break
        // Prefetch 1 is the slowest by far; fewer messages keep the run short.
        const messages = prefetch === 1 ? Math.ceil(DRAIN_MESSAGES / 4) : DRAIN_MESSAGES
        for (const system of orderOfRound(round)) {
          const run = await measureDrain(broker, runner, system, { prefetch, messages, sendDelayMs: 0 })
          ;(drain[system][prefetch] ??= []).push(run)
          log(`round ${round} ${system} drain prefetch ${prefetch}: ${fmt(run.commandsPerSecond)} commands/s (${run.leftAfterStop} left)`)
        }
      }
      for (const prefetch of SCALING_PREFETCHES) {
        if (SKIP.has("scaling")) break
        const run = await measureDrain(broker, runner, "project", { prefetch, messages: prefetch * SCALING_WAVES, sendDelayMs: 500 })
        ;(scaling[prefetch] ??= []).push(run)
        log(`round ${round} project 500 ms send, prefetch ${prefetch}: ${fmt(run.commandsPerSecond, 1)} commands/s`)
      }
    }
  } finally {
    await stopAll()
    await broker.close()
    runner.cleanUp()
  }

  // Medians of each side, and the median of the round-by-round ratios.
  const rows: Array<Row> = []
  const pairRatio = (a: ReadonlyArray<number>, b: ReadonlyArray<number>) => median(a.map((x, i) => x / b[i]!))
  const summary: Record<string, unknown> = {}
  if (orders.project.length > 0) {
    const pick = (system: System, key: keyof OrdersRun) => orders[system].map((run) => run[key])
    const rps = pairRatio(pick("project", "requestsPerSecond"), pick("baseline", "requestsPerSecond"))
    const p99 = pairRatio(pick("project", "p99Ms"), pick("baseline", "p99Ms"))
    const rss = median(pick("project", "peakRssMb"))
    summary.orders = {
      project: Object.fromEntries((Object.keys(orders.project[0]!) as Array<keyof OrdersRun>).map((k) => [k, median(pick("project", k))])),
      baseline: Object.fromEntries((Object.keys(orders.baseline[0]!) as Array<keyof OrdersRun>).map((k) => [k, median(pick("baseline", k))])),
      requestsPerSecondRatio: rps,
      p99Ratio: p99
    }
    rows.push(
      { metric: `POST /orders, ${CONNECTIONS} connections: requests/s`, project: fmt(median(pick("project", "requestsPerSecond"))), baseline: fmt(median(pick("baseline", "requestsPerSecond"))), ratio: `${fmt(rps, 2)}x`, target: ">= 1.5x", met: rps >= 1.5 ? "yes" : "NO" },
      { metric: "POST /orders: p50 latency (ms)", project: fmt(median(pick("project", "p50Ms")), 1), baseline: fmt(median(pick("baseline", "p50Ms")), 1), ratio: `${fmt(pairRatio(pick("project", "p50Ms"), pick("baseline", "p50Ms")), 2)}x`, target: "", met: "" },
      { metric: "POST /orders: p99 latency (ms)", project: fmt(median(pick("project", "p99Ms")), 1), baseline: fmt(median(pick("baseline", "p99Ms")), 1), ratio: `${fmt(p99, 2)}x`, target: "<= 1.0x", met: p99 <= 1 ? "yes" : "NO" },
      { metric: "POST /orders: errors (all rounds)", project: String(pick("project", "errors").reduce((a, b) => a + b, 0)), baseline: String(pick("baseline", "errors").reduce((a, b) => a + b, 0)), ratio: "", target: "0", met: pick("project", "errors").every((e) => e === 0) ? "yes" : "NO" },
      { metric: "order service peak RSS (MB)", project: fmt(rss), baseline: fmt(median(pick("baseline", "peakRssMb"))), ratio: "", target: "<= 150 MB", met: rss <= 150 ? "yes" : "NO" }
    )
  }
  if (drain.project[100]) {
    summary.drain = {}
    for (const prefetch of DRAIN_PREFETCHES) {
      const p = drain.project[prefetch]!.map((run) => run.commandsPerSecond)
      const b = drain.baseline[prefetch]!.map((run) => run.commandsPerSecond)
      const ratio = pairRatio(p, b)
      ;(summary.drain as Record<number, unknown>)[prefetch] = { project: median(p), baseline: median(b), ratio }
      rows.push({
        metric: `drain, no send delay, prefetch ${prefetch}: commands/s`,
        project: fmt(median(p)),
        baseline: fmt(median(b)),
        ratio: `${fmt(ratio, 2)}x`,
        target: prefetch === 100 ? ">= 1.0x" : "",
        met: prefetch === 100 ? (ratio >= 1 ? "yes" : "NO") : ""
      })
    }
  }
  if (scaling[200]) {
    summary.scaling = {}
    for (const prefetch of SCALING_PREFETCHES) {
      const rate = median(scaling[prefetch]!.map((run) => run.commandsPerSecond))
      ;(summary.scaling as Record<number, number>)[prefetch] = rate
      rows.push({
        metric: `500 ms send, prefetch ${prefetch}: commands/s`,
        project: fmt(rate, 1),
        baseline: "",
        ratio: "",
        target: prefetch === 200 ? ">= 380" : `~${2 * prefetch} ideal`,
        met: prefetch === 200 ? (rate >= 380 ? "yes" : "NO") : ""
      })
    }
  }
  // Messages left in a queue after its consumer stopped were delivered but never acked.
  const leftBy = (system: System, runs: ReadonlyArray<DrainRun>) =>
    runs.filter((run) => run.leftAfterStop !== 0).map((run) => `${system} left ${run.leftAfterStop} of ${run.messages}`)
  const leftovers = [
    ...leftBy("project", [...Object.values(drain.project), ...Object.values(scaling)].flat()),
    ...leftBy("baseline", Object.values(drain.baseline).flat())
  ]
  const loadAfter = loadavg()
  console.log()
  printTable(rows)
  if (leftovers.length > 0) console.log(`\nWARNING: drain runs left unacked messages in the queue after the consumer stopped: ${leftovers.join("; ")}`)
  console.log(`\nServices run by ${runner.name}; HTTP load from ${load.name}.`)
  console.log(`${cpus().length} cores (${cpus()[0]?.model}), ${fmt(totalmem() / 2 ** 30)} GiB, Node ${process.version}, RabbitMQ ${broker.version}; ${ROUNDS} round(s), ${DURATION_S} s per HTTP run; load average before ${loadBefore.map((l) => l.toFixed(2)).join(" ")}, after ${loadAfter.map((l) => l.toFixed(2)).join(" ")}`)

  const results = {
    startedAt: startedAt.toISOString(),
    finishedAt: new Date().toISOString(),
    machine: { cores: cpus().length, cpu: cpus()[0]?.model, memoryGiB: totalmem() / 2 ** 30, node: process.version, rabbitmq: broker.version, loadBefore, loadAfter },
    config: { runner: runner.name, load: load.name, rounds: ROUNDS, durationSeconds: DURATION_S, warmupSeconds: WARMUP_S, connections: CONNECTIONS, drainMessages: DRAIN_MESSAGES },
    summary,
    table: rows,
    runs: { orders, drain, scaling }
  }
  const dir = `${ROOT}bench/results`
  mkdirSync(dir, { recursive: true })
  const file = `${dir}/bench-${startedAt.toISOString().replace(/[:.]/g, "-")}.json`
  writeFileSync(file, JSON.stringify(results, null, 2) + "\n")
  console.log(`Results: ${file}`)
}

main().catch((error) => {
  console.error(error)
  process.exitCode = 1
})
