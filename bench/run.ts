/**
 * `npm run bench`: the project against a baseline of the original design (bench/baseline/), side
 * by side on this machine. Both run as child processes, started the same way (BENCH_RUNNER: `bundle`
 * as the Docker image runs them, the default, or `tsx` as `npm start` does), each on queues of its
 * own; the HTTP load comes from wrk over loopback (autocannon if wrk is not installed).
 *
 * Each project order service gets an order store of its own (bench/stores.ts): a fresh SQLite file,
 * or a fresh schema in PostgreSQL (BENCH_STORES). For the project alone it also reports the outbox
 * under that load (lag from commit to broker confirm, from the `order_outbox_lag_seconds` buckets;
 * whether `order_outbox_pending` grew), and, in a separate shorter run at half that load with a
 * notification service consuming, the time from POST /orders to the consumer's send log line.
 *
 * Measured alternately (project, baseline, then baseline, project, ...) so that drift in the
 * machine's load hits both alike; each ratio is taken within a round, and we report medians.
 *
 * Knobs: BENCH_RUNNER (bundle), BENCH_ROUNDS (5), BENCH_DURATION (10 s per HTTP run), BENCH_WARMUP (3 s),
 * BENCH_LATENCY_DURATION (5 s), BENCH_DRAIN_MESSAGES (40000), BENCH_STORES (comma list of: sqlite,
 * postgres; sqlite), BENCH_DATABASE_URL (postgres://postgres@127.0.0.1:5432/test), BENCH_SKIP (comma
 * list of: orders, npmstart, latency, drain, scaling), BENCH_VHOST (unset: a RabbitMQ vhost of the benchmark's
 * own, made with rabbitmqctl when the broker is this machine's; `shared`: AMQP_URL's, as before).
 * Quick look: BENCH_ROUNDS=1 BENCH_DURATION=4 BENCH_DRAIN_MESSAGES=5000 npm run bench
 */
import { mkdirSync, writeFileSync } from "node:fs"
import { cpus, loadavg, totalmem } from "node:os"
import { workQueueArguments, deadLetterQueueOf } from "../src/messaging/QueueTopology"
import { chooseLoad, type LoadResult, postOrdersPaced } from "./load"
import { gauge, histogramDelta, scrape } from "./metrics"
import { checkPostgres, createStore, POSTGRES_URL, removeAllStores, STORE_NAMES, type StoreKind, storesFromEnv } from "./stores"
import {
  type Broker,
  connectBroker,
  freePort,
  median,
  prepareRunner,
  prepareVhost,
  ROOT,
  type Runner,
  type Service,
  sleep,
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
const LATENCY_DURATION_S = envInt("BENCH_LATENCY_DURATION", 5)
const DRAIN_MESSAGES = envInt("BENCH_DRAIN_MESSAGES", 40_000)
const SKIP = new Set((process.env.BENCH_SKIP ?? "").split(",").map((s) => s.trim()))
const STORES = storesFromEnv()
const RUNNER = process.env.BENCH_RUNNER ?? "bundle"
if (RUNNER !== "bundle" && RUNNER !== "tsx") throw new Error("BENCH_RUNNER must be bundle or tsx")
const load = chooseLoad()
const CONNECTIONS = 50
const DRAIN_PREFETCHES = [1, 100, 1000] as const
const SCALING_PREFETCHES = [1, 50, 100, 200] as const
const SCALING_WAVES = 10
const SEND_LINE = "Sending notification for order"
/** How long after the load the outbox backlog is looked at again. */
const SETTLE_MS = 3000
/** The consumer's prefetch in the latency run: the one the drain target is set at. */
const LATENCY_PREFETCH = 100

type System = "project" | "baseline"

const SYSTEMS = {
  project: {
    order: "src/order/main.ts",
    consumer: "src/notification/main.ts",
    // The project declares this itself; the benchmark declares it identically to pre-fill it.
    queueArguments: workQueueArguments,
    waitUntilReady: (service: Service, port: number) => waitForHttp(`http://127.0.0.1:${port}/health/ready`, 30_000).then(() => service)
  },
  baseline: {
    order: "bench/baseline/order-service.ts",
    consumer: "bench/baseline/notification-service.ts",
    queueArguments: (_queue: string) => ({ "x-queue-type": "quorum" }),
    waitUntilReady: (service: Service, _port: number) => service.waitForLine(/running on port/, 30_000).then(() => service)
  }
} as const

/** The order services of a round, in the order they are measured: each store of the project, and the baseline. */
type OrdersSubject = { readonly system: "project"; readonly store: StoreKind } | { readonly system: "baseline" }

/** Project first in odd rounds, baseline first in even ones. */
const subjectsOfRound = (round: number): ReadonlyArray<OrdersSubject> => {
  const subjects: Array<OrdersSubject> = [...STORES.map((store) => ({ system: "project" as const, store })), { system: "baseline" }]
  return round % 2 === 1 ? subjects : subjects.reverse()
}

/** Project first in odd rounds, baseline first in even ones. */
const orderOfRound = (round: number): ReadonlyArray<System> =>
  round % 2 === 1 ? ["project", "baseline"] : ["baseline", "project"]

interface OrdersRun extends LoadResult {
  readonly peakRssMb: number
}

/** The outbox while the project's POST /orders run was under load. */
interface OutboxRun {
  /** Commit to broker confirm, from the histogram's bucket deltas over the run (and the settling after it). */
  readonly lagP50Ms: number
  readonly lagP99Ms: number
  readonly lagObservations: number
  /**
   * `order_outbox_pending` (as the service last counted it, once a second) as the measured load
   * began (right after the warm-up at the same load, so already at its level under load), at its end,
   * and SETTLE_MS later.
   */
  readonly pendingAtStart: number
  readonly pendingAtEnd: number
  readonly pendingAfterSettle: number
  /** The largest value sampled (every second) during the load. */
  readonly pendingMaxDuringLoad: number
}

interface ProjectOrdersRun extends OrdersRun {
  readonly outbox: OutboxRun
}

const LAG = "order_outbox_lag_seconds"
const PENDING = "order_outbox_pending"

/**
 * A project order service (or `entry`, which runs one, with `env` besides) on a store and queues of
 * its own, ready; `close` stops it and removes them.
 */
const startProjectOrderService = async (
  broker: Broker,
  runner: Runner,
  kind: StoreKind,
  queue: string,
  entry: string = SYSTEMS.project.order,
  env: Record<string, string> = {}
) => {
  const eventsQueue = `${queue}.events`
  for (const q of [queue, deadLetterQueueOf(queue), eventsQueue, deadLetterQueueOf(eventsQueue)]) broker.track(q)
  const store = await createStore(kind)
  const port = await freePort()
  const service = startService(runner, entry, {
    ...env,
    PORT: String(port),
    COMMAND_QUEUE: queue,
    ORDER_EVENTS_QUEUE: eventsQueue,
    DATABASE_URL: store.databaseUrl
  })
  const close = async () => {
    await service.stop()
    await store.remove()
    for (const q of [queue, deadLetterQueueOf(queue), eventsQueue, deadLetterQueueOf(eventsQueue)]) await broker.deleteQueue(q)
  }
  try {
    await SYSTEMS.project.waitUntilReady(service, port)
  } catch (error) {
    const output = service.output()
    await close()
    throw new Error(`${String(error)}\n${output}`)
  }
  return { service, port, close }
}

const measureProjectOrders = async (broker: Broker, runner: Runner, kind: StoreKind): Promise<ProjectOrdersRun> => {
  const { close, port, service } = await startProjectOrderService(broker, runner, kind, uniqueQueue(`project.${kind}.orders`))
  try {
    const url = `http://127.0.0.1:${port}/orders`
    const metricsUrl = `http://127.0.0.1:${port}/metrics`
    await load.postOrders(url, { connections: CONNECTIONS, durationS: WARMUP_S })
    const before = await scrape(metricsUrl)
    let pendingMax = 0
    const sampler = setInterval(() => {
      scrape(metricsUrl).then((samples) => (pendingMax = Math.max(pendingMax, gauge(samples, PENDING))), () => undefined)
    }, 1000)
    const result = await load.postOrders(url, { connections: CONNECTIONS, durationS: DURATION_S }).finally(() => clearInterval(sampler))
    const atEnd = await scrape(metricsUrl)
    await sleep(SETTLE_MS)
    const settled = await scrape(metricsUrl)
    const lag = histogramDelta(before, settled, LAG)
    return {
      ...result,
      peakRssMb: service.peakRssMb(),
      outbox: {
        lagP50Ms: lag.quantile(0.5) * 1000,
        lagP99Ms: lag.quantile(0.99) * 1000,
        lagObservations: lag.count,
        pendingAtStart: gauge(before, PENDING),
        pendingAtEnd: gauge(atEnd, PENDING),
        pendingAfterSettle: gauge(settled, PENDING),
        pendingMaxDuringLoad: Math.max(pendingMax, gauge(atEnd, PENDING))
      }
    }
  } finally {
    await close()
  }
}

/** The warm-up, then the measured POST /orders run against `port`, and the service's peak RSS. */
const loadOrders = async (service: Service, port: number): Promise<OrdersRun> => {
  const url = `http://127.0.0.1:${port}/orders`
  await load.postOrders(url, { connections: CONNECTIONS, durationS: WARMUP_S })
  const result = await load.postOrders(url, { connections: CONNECTIONS, durationS: DURATION_S })
  return { ...result, peakRssMb: service.peakRssMb() }
}

/**
 * What `npm start` runs, both services in one process on a SQLite store of its own (the notification
 * service with its default 500 ms send), under the same POST /orders load: its peak RSS.
 */
const measureNpmStart = async (broker: Broker, runner: Runner): Promise<OrdersRun> => {
  const { close, port, service } = await startProjectOrderService(
    broker,
    runner,
    "sqlite",
    uniqueQueue("project.npmstart.orders"),
    "src/main.ts",
    { NOTIFICATION_HEALTH_PORT: "0" }
  )
  try {
    return await loadOrders(service, port)
  } finally {
    await close()
  }
}

const measureBaselineOrders = async (broker: Broker, runner: Runner): Promise<OrdersRun> => {
  const queue = uniqueQueue("baseline.orders")
  broker.track(queue)
  broker.track(deadLetterQueueOf(queue))
  const port = await freePort()
  const service = startService(runner, SYSTEMS.baseline.order, { PORT: String(port), COMMAND_QUEUE: queue })
  try {
    await SYSTEMS.baseline.waitUntilReady(service, port)
    return await loadOrders(service, port)
  } finally {
    await service.stop()
    await broker.deleteQueue(queue)
    await broker.deleteQueue(deadLetterQueueOf(queue))
  }
}

/** POST /orders to the consumer's send log line, for the orders of one paced run. */
interface LatencyRun {
  readonly targetRate: number
  readonly achievedRate: number
  readonly posted: number
  readonly errors: number
  /** Orders answered 201 whose send line did not come within the wait. */
  readonly missing: number
  readonly p50Ms: number
  readonly p99Ms: number
}

const percentile = (sorted: ReadonlyArray<number>, q: number) =>
  sorted.length === 0 ? NaN : sorted[Math.min(sorted.length - 1, Math.ceil(q * sorted.length) - 1)]!

const sendLineOf = (line: string): { readonly orderId: string; readonly at: number } | undefined => {
  if (!line.includes(SEND_LINE)) return undefined
  try {
    const entry = JSON.parse(line) as { message?: unknown; timestamp?: string }
    const message = Array.isArray(entry.message) ? entry.message.join(" ") : String(entry.message)
    const orderId = new RegExp(`${SEND_LINE} (\\S+)`).exec(message)?.[1]
    const at = Date.parse(entry.timestamp ?? "")
    return orderId === undefined || Number.isNaN(at) ? undefined : { orderId, at }
  } catch {
    return undefined
  }
}

/**
 * A project order service and a notification service (send delay 0) on one command queue; orders
 * posted at `rate` and each one's orderId matched with the consumer's `Sending notification` line
 * (LOG_FORMAT=json: its own timestamp, on the same clock as the client's).
 */
const measureLatency = async (broker: Broker, runner: Runner, kind: StoreKind, rate: number): Promise<LatencyRun> => {
  const queue = uniqueQueue(`project.${kind}.latency`)
  const order = await startProjectOrderService(broker, runner, kind, queue)
  const healthPort = await freePort()
  const sent = new Map<string, number>()
  const consumer = startService(runner, SYSTEMS.project.consumer, {
    COMMAND_QUEUE: queue,
    NOTIFICATION_PREFETCH: String(LATENCY_PREFETCH),
    NOTIFICATION_SEND_DELAY_MS: "0",
    NOTIFICATION_HEALTH_PORT: String(healthPort),
    LOG_FORMAT: "json"
  })
  let waiting: { readonly ids: ReadonlySet<string>; readonly resolve: () => void } | undefined
  consumer.onLine = (line) => {
    const send = sendLineOf(line)
    if (send === undefined) return
    sent.set(send.orderId, send.at)
    if (waiting !== undefined && sent.size >= waiting.ids.size && [...waiting.ids].every((id) => sent.has(id))) waiting.resolve()
  }
  try {
    await waitForHttp(`http://127.0.0.1:${healthPort}/health/ready`, 30_000)
    const url = `http://127.0.0.1:${order.port}/orders`
    await postOrdersPaced(url, { connections: CONNECTIONS, durationS: WARMUP_S, rate })
    const run = await postOrdersPaced(url, { connections: CONNECTIONS, durationS: LATENCY_DURATION_S, rate })
    const ids = new Set(run.orders.map((o) => o.orderId))
    if (![...ids].every((id) => sent.has(id))) {
      let timer: NodeJS.Timeout | undefined
      await Promise.race([
        new Promise<void>((resolve) => (waiting = { ids, resolve })),
        new Promise<void>((resolve) => (timer = setTimeout(resolve, 30_000)))
      ]).finally(() => clearTimeout(timer))
    }
    const latencies = run.orders.flatMap(({ orderId, sentAt }) => {
      const at = sent.get(orderId)
      return at === undefined ? [] : [at - sentAt]
    }).sort((a, b) => a - b)
    return {
      targetRate: rate,
      achievedRate: run.requestsPerSecond,
      posted: run.orders.length,
      errors: run.errors,
      missing: run.orders.length - latencies.length,
      p50Ms: percentile(latencies, 0.5),
      p99Ms: percentile(latencies, 0.99)
    }
  } finally {
    await order.service.stop()
    await consumer.stop()
    await order.close()
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
  // The project publishes an event per command: to a queue, as when an order service listens.
  const eventsQueue = `${queue}.events`
  if (system === "project") await broker.bindEvents(eventsQueue)
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
    for (const q of [queue, deadLetterQueueOf(queue), eventsQueue]) await broker.deleteQueue(q)
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

/** The command that ran the benchmark, as one could type it again (passwords hidden). */
const commandLine = () => {
  const hide = (value: string) => value.replace(/^([a-z][a-z0-9+.-]*:\/\/[^:/@]*:)[^@/]*@/i, "$1***@")
  const quote = (value: string) => (/^[\w@%+=:,./-]*$/.test(value) ? value : `'${value.replace(/'/g, "'\\''")}'`)
  const settings = Object.entries(process.env)
    .filter(([name]) => name.startsWith("BENCH_") || name === "AMQP_URL")
    .sort(([a], [b]) => a.localeCompare(b))
    .map(([name, value]) => `${name}=${quote(hide(value ?? ""))}`)
  return [...settings, "npm run bench"].join(" ")
}

const main = async () => {
  const command = commandLine()
  if (STORES.includes("postgres")) await checkPostgres()
  const vhost = prepareVhost()
  // Every service the benchmark starts inherits it.
  process.env.AMQP_URL = vhost.url
  const broker = await connectBroker(vhost.url).catch((error: unknown) => {
    vhost.remove()
    throw error
  })
  const runner = await prepareRunner(RUNNER)
  const startedAt = new Date()
  const loadBefore = loadavg()
  const orders = {
    baseline: [] as Array<OrdersRun>,
    project: Object.fromEntries(STORES.map((store) => [store, [] as Array<ProjectOrdersRun>])) as Record<StoreKind, Array<ProjectOrdersRun>>
  }
  const npmStart: Array<OrdersRun> = []
  const latency = Object.fromEntries(STORES.map((store) => [store, [] as Array<LatencyRun>])) as Record<StoreKind, Array<LatencyRun>>
  const drain: Record<System, Record<number, Array<DrainRun>>> = { project: {}, baseline: {} }
  const scaling: Record<number, Array<DrainRun>> = {}
  const cleanUp = async () => {
    await stopAll()
    await removeAllStores()
    await broker.close()
    vhost.remove()
    runner.cleanUp()
  }
  // `on`, not `once`: Ctrl-C reaches tsx and this process alike, and tsx passes its own on, so a
  // second SIGINT arrives while cleaning up and would otherwise end the process half-way.
  let interrupted = false
  const onSignal = () => {
    if (interrupted) return
    interrupted = true
    log("interrupted; stopping services, deleting queues, stores and the vhost")
    void cleanUp().finally(() => process.exit(130))
  }
  process.on("SIGINT", onSignal)
  process.on("SIGTERM", onSignal)
  try {
    log(`Services run by ${runner.name}; HTTP load from ${load.name}; project order stores: ${STORES.map((s) => STORE_NAMES[s]).join(", ")}`)
    log(`RabbitMQ ${broker.version}, in ${vhost.description}; ${ROUNDS} round(s); load average ${loadBefore.map((l) => l.toFixed(2)).join(" ")}`)
    for (let round = 1; round <= ROUNDS; round++) {
      for (const subject of subjectsOfRound(round)) {
        if (SKIP.has("orders")) break
        if (subject.system === "baseline") {
          const run = await measureBaselineOrders(broker, runner)
          orders.baseline.push(run)
          log(`round ${round} baseline POST /orders: ${fmt(run.requestsPerSecond)} req/s, p50 ${run.p50Ms} ms, p99 ${run.p99Ms} ms, ${run.errors} errors, peak RSS ${fmt(run.peakRssMb)} MB`)
        } else {
          const run = await measureProjectOrders(broker, runner, subject.store)
          orders.project[subject.store].push(run)
          const { outbox } = run
          log(`round ${round} project (${STORE_NAMES[subject.store]}) POST /orders: ${fmt(run.requestsPerSecond)} req/s, p50 ${run.p50Ms} ms, p99 ${run.p99Ms} ms, ${run.errors} errors, peak RSS ${fmt(run.peakRssMb)} MB; outbox lag p50 ${fmt(outbox.lagP50Ms, 1)} ms, p99 ${fmt(outbox.lagP99Ms, 1)} ms (${outbox.lagObservations} confirms), pending ${outbox.pendingAtStart} at the start, ${outbox.pendingAtEnd} at the end, ${outbox.pendingAfterSettle} ${SETTLE_MS / 1000} s later, at most ${outbox.pendingMaxDuringLoad}`)
        }
      }
      if (!SKIP.has("orders") && !SKIP.has("npmstart")) {
        const run = await measureNpmStart(broker, runner)
        npmStart.push(run)
        log(`round ${round} npm start (both services, SQLite) POST /orders: ${fmt(run.requestsPerSecond)} req/s, ${run.errors} errors, peak RSS ${fmt(run.peakRssMb)} MB`)
      }
      for (const store of STORES) {
        if (SKIP.has("latency") || SKIP.has("orders")) break
        // At about half the load this round's POST /orders run sustained on the same store.
        const rate = Math.max(1, Math.round(orders.project[store].at(-1)!.requestsPerSecond / 2))
        const run = await measureLatency(broker, runner, store, rate)
        latency[store].push(run)
        log(`round ${round} project (${STORE_NAMES[store]}) POST to send line at ${fmt(run.achievedRate)} req/s (asked ${fmt(rate)}): p50 ${fmt(run.p50Ms, 1)} ms, p99 ${fmt(run.p99Ms, 1)} ms, ${run.posted} orders, ${run.errors} errors, ${run.missing} never sent`)
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
    await cleanUp()
  }

  /** The targets are set for the default store; PostgreSQL's figures are reported. */
  const target = (store: StoreKind, text: string, met: boolean) =>
    store === "sqlite" ? { target: text, met: met ? "yes" : "NO" } : { target: "(reported)", met: "" }
  // Medians of each side, and the median of the round-by-round ratios.
  const rows: Array<Row> = []
  const pairRatio = (a: ReadonlyArray<number>, b: ReadonlyArray<number>) => median(a.map((x, i) => x / b[i]!))
  const sum = (values: ReadonlyArray<number>) => values.reduce((a, b) => a + b, 0)
  const summary: Record<string, unknown> = {}
  if (orders.baseline.length > 0) {
    const medians = <K extends string>(runs: ReadonlyArray<Record<K, number>>, keys: ReadonlyArray<K>) =>
      Object.fromEntries(keys.map((k) => [k, median(runs.map((run) => run[k]))])) as Record<K, number>
    const loadKeys = ["requestsPerSecond", "p50Ms", "p99Ms", "errors", "requests", "peakRssMb"] as const
    const b = medians(orders.baseline, loadKeys)
    const baselineOf = (key: keyof OrdersRun) => orders.baseline.map((run) => run[key])
    const projectSummary: Record<string, unknown> = {}
    summary.orders = { baseline: b, project: projectSummary }
    for (const store of STORES) {
      const runs = orders.project[store]
      const name = STORE_NAMES[store]
      const pick = (key: keyof OrdersRun) => runs.map((run) => run[key])
      const p = medians(runs, loadKeys)
      const outbox = medians(runs.map((run) => run.outbox), ["lagP50Ms", "lagP99Ms", "lagObservations", "pendingAtStart", "pendingAtEnd", "pendingAfterSettle", "pendingMaxDuringLoad"])
      const rps = pairRatio(pick("requestsPerSecond"), baselineOf("requestsPerSecond"))
      const p99 = pairRatio(pick("p99Ms"), baselineOf("p99Ms"))
      // Grown: more than half a second's orders more waiting at the end than at the start, or not
      // back to 0 soon after. (What is in flight at any moment, about rate x lag, is there at both.)
      const grew = runs.some(({ outbox, requestsPerSecond }) =>
        outbox.pendingAtEnd - outbox.pendingAtStart > Math.max(50, requestsPerSecond / 2) || outbox.pendingAfterSettle > 0
      )
      const errors = sum(pick("errors"))
      rows.push(
        { metric: `POST /orders (${name}), ${CONNECTIONS} connections: requests/s`, project: fmt(p.requestsPerSecond), baseline: fmt(b.requestsPerSecond), ratio: `${fmt(rps, 2)}x`, ...target(store, ">= 2.5x", rps >= 2.5) },
        { metric: `POST /orders (${name}): p50 latency (ms)`, project: fmt(p.p50Ms, 1), baseline: fmt(b.p50Ms, 1), ratio: `${fmt(pairRatio(pick("p50Ms"), baselineOf("p50Ms")), 2)}x`, target: "", met: "" },
        { metric: `POST /orders (${name}): p99 latency (ms)`, project: fmt(p.p99Ms, 1), baseline: fmt(b.p99Ms, 1), ratio: `${fmt(p99, 2)}x`, ...target(store, "<= 1.0x", p99 <= 1) },
        { metric: `POST /orders (${name}): errors (all rounds)`, project: String(errors), baseline: String(sum(baselineOf("errors"))), ratio: "", target: "0", met: errors === 0 ? "yes" : "NO" },
        { metric: `order service alone, peak RSS (${name}) (MB)`, project: fmt(p.peakRssMb), baseline: fmt(b.peakRssMb), ratio: "", target: "", met: "" },
        { metric: `outbox lag under that load (${name}), commit to confirm: p50 / p99 (ms, bucket-resolution)`, project: `${fmt(outbox.lagP50Ms, 1)} / ${fmt(outbox.lagP99Ms, 1)}`, baseline: "", ratio: "", ...target(store, "p99 <= 50 ms", outbox.lagP99Ms <= 50) },
        { metric: `outbox pending (${name}): start -> end of load / ${SETTLE_MS / 1000} s later (max)`, project: `${fmt(outbox.pendingAtStart)} -> ${fmt(outbox.pendingAtEnd)} / ${fmt(outbox.pendingAfterSettle)} (${fmt(outbox.pendingMaxDuringLoad)})`, baseline: "", ratio: "", target: "no growth", met: grew ? "NO: grew" : "yes" }
      )
      const l = latency[store]
      const latencySummary = l.length > 0 ? medians(l, ["targetRate", "achievedRate", "posted", "errors", "missing", "p50Ms", "p99Ms"]) : undefined
      if (latencySummary !== undefined) {
        const lost = sum(l.map((run) => run.missing + run.errors))
        rows.push({
          metric: `POST to consumer's send line (${name}), at ${fmt(latencySummary.achievedRate)} req/s (asked ${fmt(latencySummary.targetRate)}): p50 / p99 (ms)`,
          project: `${fmt(latencySummary.p50Ms, 1)} / ${fmt(latencySummary.p99Ms, 1)}`,
          baseline: "",
          ratio: "",
          target: store === "sqlite" ? "p99 <= 100 ms, every order sent" : "every order sent",
          met: lost > 0 ? `NO: ${lost} not sent` : store === "sqlite" && latencySummary.p99Ms > 100 ? "NO" : "yes"
        })
      }
      projectSummary[store] = { ...p, requestsPerSecondRatio: rps, p99Ratio: p99, outbox: { ...outbox, grew }, notificationLatency: latencySummary }
    }
  }
  if (npmStart.length > 0) {
    const peak = median(npmStart.map((run) => run.peakRssMb))
    summary.npmStart = { peakRssMb: peak, requestsPerSecond: median(npmStart.map((run) => run.requestsPerSecond)) }
    rows.push({
      metric: `what npm start runs (both services, SQLite) under that load: peak RSS (MB)`,
      project: fmt(peak),
      baseline: "",
      ratio: "",
      target: "<= 150 MB",
      met: peak <= 150 ? "yes" : "NO"
    })
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
  console.log(`$ ${command}`)
  printTable(rows)
  if (leftovers.length > 0) console.log(`\nWARNING: drain runs left unacked messages in the queue after the consumer stopped: ${leftovers.join("; ")}`)
  console.log(`\nServices run by ${runner.name}; HTTP load from ${load.name}. RabbitMQ: ${vhost.description}. Project order stores: ${STORES.map((s) => STORE_NAMES[s]).join(", ")}, each fresh (PostgreSQL: a schema of its own at ${POSTGRES_URL.replace(/:[^:@/]*@/, ":***@")}).`)
  console.log(`Outbox lag: linear within the order_outbox_lag_seconds buckets, so only as fine as they are. Send-line latency: a separate ${LATENCY_DURATION_S} s run at half the POST /orders rate, consumer prefetch ${LATENCY_PREFETCH}, no send delay.`)
  console.log(`${cpus().length} cores (${cpus()[0]?.model}), ${fmt(totalmem() / 2 ** 30)} GiB, Node ${process.version}, RabbitMQ ${broker.version}; ${ROUNDS} round(s), ${DURATION_S} s per HTTP run; load average before ${loadBefore.map((l) => l.toFixed(2)).join(" ")}, after ${loadAfter.map((l) => l.toFixed(2)).join(" ")}`)

  const results = {
    startedAt: startedAt.toISOString(),
    finishedAt: new Date().toISOString(),
    machine: { cores: cpus().length, cpu: cpus()[0]?.model, memoryGiB: totalmem() / 2 ** 30, node: process.version, rabbitmq: broker.version, loadBefore, loadAfter },
    command,
    config: {
      vhost: vhost.description,
      runner: runner.name,
      load: load.name,
      rounds: ROUNDS,
      durationSeconds: DURATION_S,
      warmupSeconds: WARMUP_S,
      latencyDurationSeconds: LATENCY_DURATION_S,
      latencyPrefetch: LATENCY_PREFETCH,
      settleSeconds: SETTLE_MS / 1000,
      connections: CONNECTIONS,
      drainMessages: DRAIN_MESSAGES,
      stores: STORES
    },
    summary,
    table: rows,
    runs: { orders, npmStart, latency, drain, scaling }
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
