import * as amqp from "amqplib"
import { Effect, Fiber } from "effect"
import { type ChildProcess, spawn } from "node:child_process"
import { randomUUID } from "node:crypto"
import { once } from "node:events"
import pg from "pg"
import { type LogSource, type RunningService, until, waitForReadiness } from "../support/faultRig"
import { CLUSTER_NODES, leaderOf, queueNames, runningNodes } from "../support/privateCluster"
import { nodeRunning, type RabbitNode, startNode } from "../support/rabbitNode"
import { freePort, spawnService } from "../support/processes"
import type { Account } from "../../src/verify/Workload"

/**
 * The scale-out scenarios' rig: on the private cluster (test/support/privateCluster.ts), two
 * order-service replicas sharing one PostgreSQL schema of the scenario's own, two notification
 * services, each process with the three nodes in an order of its own in AMQP_URL; the real
 * `npm run verify` as the load and the account; and figures read from the services' own log lines.
 */

export const POSTGRES_URL = process.env.CLUSTER_DATABASE_URL ?? "postgres://postgres@127.0.0.1:5432/test"

/** A small heartbeat: a half-open connection is noticed within about twice it. */
export const HEARTBEAT_S = 2

// ---------------------------------------------------------------------------------------------
// The cluster

/** The nodes running now, as the first running node sees them (none when no node runs). */
export const clusterMembers = Effect.promise(async () => {
  const via = CLUSTER_NODES.find(nodeRunning)
  return via === undefined ? [] : await runningNodes(via).catch((): ReadonlyArray<string> => [])
})

/** A running node to ask, other than `except`. */
export const aliveNode = (except: ReadonlyArray<string> = []): RabbitNode => {
  const node = CLUSTER_NODES.find((node) => !except.includes(node.name) && nodeRunning(node))
  if (node === undefined) throw new Error("No node of the private cluster is running")
  return node
}

/** All three nodes running and in the cluster: what a scenario starts from, and leaves behind. */
export const wholeCluster = Effect.gen(function*() {
  for (const node of CLUSTER_NODES) {
    if (!nodeRunning(node)) yield* Effect.promise(() => startNode(node))
  }
  yield* until(clusterMembers, (members) => members.length === 3, { timeoutMs: 120_000, what: "all three nodes in the cluster" })
})

/** Until `node` is counted as running by another node of the cluster; the milliseconds it took. */
export const backInCluster = (node: RabbitNode) =>
  until(Effect.promise(() => runningNodes(aliveNode([node.name])).catch((): ReadonlyArray<string> => [])), (members) => members.includes(node.name), {
    timeoutMs: 120_000,
    what: `${node.name} back in the cluster`
  })

// ---------------------------------------------------------------------------------------------
// The store

type PgClient = InstanceType<typeof pg.Client>
interface Rows<A> {
  readonly rows: ReadonlyArray<A>
}

const withClient = async <A>(url: string, f: (client: PgClient) => Promise<A>): Promise<A> => {
  const client = new pg.Client({ connectionString: url, connectionTimeoutMillis: 5000 })
  await client.connect()
  try {
    return await f(client)
  } finally {
    await client.end()
  }
}

/** A URL with `search_path` set to `schema` (as bench/stores.ts chooses a schema). */
const withSearchPath = (base: string, schema: string) =>
  `${base}${base.includes("?") ? "&" : "?"}options=${encodeURIComponent(`-c search_path=${schema}`)}`

/** Every scenario schema is named so: `cluster_<label>_<id>`. */
const SCHEMA_PREFIX = "cluster_"

/** Drops every scenario schema there is (a killed run's); the names it dropped. */
export const dropScenarioSchemas = () =>
  withClient(POSTGRES_URL, async (client) => {
    const { rows } = (await client.query(
      `SELECT nspname FROM pg_namespace WHERE starts_with(nspname, '${SCHEMA_PREFIX}')`
    )) as Rows<{ nspname: string }>
    for (const { nspname } of rows) await client.query(`DROP SCHEMA IF EXISTS "${nspname}" CASCADE`)
    return rows.map(({ nspname }) => nspname)
  })

// ---------------------------------------------------------------------------------------------
// A scenario

export interface Scenario {
  readonly label: string
  readonly queue: string
  readonly eventsQueue: string
  readonly schema: string
  /** The order services' DATABASE_URL: the shared PostgreSQL, the scenario's schema. */
  readonly databaseUrl: string
  /** A query on the scenario's schema, on a connection of the test's own. */
  readonly query: <A>(text: string) => Effect.Effect<ReadonlyArray<A>>
}

/** Deletes every queue whose name starts with `prefix`, on a node that runs; fails if one is left. */
const deleteQueuesOf = (prefix: string) =>
  Effect.promise(async () => {
    const via = aliveNode()
    const names = (await queueNames(via)).filter((name) => name.startsWith(prefix))
    const connection = await amqp.connect(via.amqpUrl)
    try {
      const channel = await connection.createChannel()
      for (const name of names) await channel.deleteQueue(name)
    } finally {
      await connection.close().catch(() => undefined)
    }
    const left = (await queueNames(via)).filter((name) => name.startsWith(prefix))
    if (left.length > 0) throw new Error(`Queues left on the cluster: ${left.join(", ")}`)
  })

/**
 * A scenario's own command queue (and so events, dead-letter and delay queues) and PostgreSQL
 * schema, on a whole cluster. The schema is dropped and the queues deleted when the scope closes,
 * after the services (started later in the scope) are gone, and after the cluster is whole again.
 */
export const clusterScenario = (label: string) =>
  Effect.gen(function*() {
    yield* wholeCluster
    const id = randomUUID().slice(0, 8)
    const queue = `cluster.${label}.${id}`
    const schema = `${SCHEMA_PREFIX}${label.replace(/[^a-z0-9]/g, "_")}_${id}`
    yield* Effect.acquireRelease(
      Effect.promise(() => withClient(POSTGRES_URL, (client) => client.query(`CREATE SCHEMA "${schema}"`))),
      () => Effect.promise(() => withClient(POSTGRES_URL, (client) => client.query(`DROP SCHEMA IF EXISTS "${schema}" CASCADE`)))
    )
    yield* Effect.addFinalizer(() => deleteQueuesOf(queue))
    // Runs before the queues are deleted: a scenario that failed half way leaves no node down.
    yield* Effect.addFinalizer(() => wholeCluster.pipe(Effect.orDie))
    const databaseUrl = withSearchPath(POSTGRES_URL, schema)
    const client = yield* Effect.acquireRelease(
      Effect.promise(async () => {
        const client = new pg.Client({ connectionString: databaseUrl, connectionTimeoutMillis: 5000 })
        await client.connect()
        return client
      }),
      (client) => Effect.promise(() => client.end().catch(() => undefined))
    )
    const query = <A>(text: string) => Effect.promise(() => client.query(text).then((result) => (result as Rows<A>).rows))
    return { label, queue, eventsQueue: `${queue}.events`, schema, databaseUrl, query } satisfies Scenario
  })

// ---------------------------------------------------------------------------------------------
// The services

/** Each process lists the nodes in an order of its own: r1 r2 r3, r2 r3 r1, r3 r1 r2, r1 r3 r2. */
const NODE_ORDERS: ReadonlyArray<ReadonlyArray<number>> = [[0, 1, 2], [1, 2, 0], [2, 0, 1], [0, 2, 1]]

export const nodeUrls = (index: number) => NODE_ORDERS[index % NODE_ORDERS.length]!.map((i) => CLUSTER_NODES[i]!.amqpUrl)

const sharedEnv = (scenario: Scenario, urls: ReadonlyArray<string>) => ({
  AMQP_URL: urls.join(","),
  AMQP_HEARTBEAT_S: HEARTBEAT_S,
  COMMAND_QUEUE: scenario.queue,
  ORDER_EVENTS_QUEUE: scenario.eventsQueue,
  LOG_FORMAT: "json",
  LOG_LEVEL: "info"
})

/** A service as a child process on `port`, once it answers ready; killed with the scope. */
const startService = (entry: string, env: Record<string, string | number>, portVariable: string, port: number | undefined) =>
  Effect.gen(function*() {
    const chosen = port ?? (yield* freePort)
    const service = yield* spawnService(entry, { ...env, [portVariable]: chosen })
    yield* waitForReadiness(chosen, 200, { timeoutMs: 60_000, what: `${entry} to be ready on ${chosen}` }).pipe(
      Effect.catchAllDefect((defect) =>
        Effect.dieMessage(`${String(defect)}\nLast lines of the service:\n${service.lines.slice(-20).join("\n")}`))
    )
    return { ...service, port: chosen } satisfies RunningService
  })

/** An order replica on the scenario's schema; on `port` if given (a replica restarted where it was). */
export const startOrderReplica = (
  scenario: Scenario,
  urls: ReadonlyArray<string>,
  options: { readonly port?: number; readonly env?: Record<string, string | number> } = {}
) => startService("order/main.ts", { ...sharedEnv(scenario, urls), DATABASE_URL: scenario.databaseUrl, ...options.env }, "PORT", options.port)

export const startNotifier = (scenario: Scenario, urls: ReadonlyArray<string>, env: Record<string, string | number> = {}) =>
  startService(
    "notification/main.ts",
    { ...sharedEnv(scenario, urls), NOTIFICATION_SEND_DELAY_MS: 20, NOTIFICATION_PREFETCH: 10, ...env },
    "NOTIFICATION_HEALTH_PORT",
    undefined
  )

export interface System {
  readonly orders: ReadonlyArray<RunningService>
  readonly notifiers: ReadonlyArray<RunningService>
  /** Every process, with a name for the figures: order-1, order-2, notification-1, notification-2. */
  readonly named: ReadonlyArray<{ readonly name: string; readonly service: RunningService }>
}

/**
 * Two order replicas and two notification services, started at once, each with the node order of
 * its own (`urlsOf(i)` for the i-th process: orders 0 and 1, notifiers 2 and 3); ready once each
 * answers ready and has a connection, and the notifiers consume.
 */
export const startSystem = (
  scenario: Scenario,
  options: {
    readonly urlsOf?: (process: number) => ReadonlyArray<string>
    readonly orderEnv?: Record<string, string | number>
    /**
     * The order replicas first, and the notification services only once the command queue exists:
     * its leader is then on an order replica's node (RabbitMQ puts a quorum queue's leader on the
     * node of the connection that declares it).
     */
    readonly ordersFirst?: boolean
  } = {}
) =>
  Effect.gen(function*() {
    const urlsOf = options.urlsOf ?? nodeUrls
    const startOrders = Effect.all(
      [0, 1].map((i) => startOrderReplica(scenario, urlsOf(i), options.orderEnv === undefined ? {} : { env: options.orderEnv })),
      { concurrency: "unbounded" }
    )
    const startNotifiers = Effect.all([2, 3].map((i) => startNotifier(scenario, urlsOf(i))), { concurrency: "unbounded" })
    const [orders, notifiers] = options.ordersFirst === true
      ? yield* Effect.gen(function*() {
        const orders = yield* startOrders
        yield* until(leaderNow(scenario.queue), (leader) => leader !== undefined, { timeoutMs: 60_000, what: "the command queue" })
        return [orders, yield* startNotifiers] as const
      })
      : yield* Effect.all([startOrders, startNotifiers], { concurrency: "unbounded" })
    for (const service of [...orders, ...notifiers]) yield* service.waitForLine(/"message":"Connected to /, { timeoutMs: 60_000 })
    for (const notifier of notifiers) yield* notifier.waitForLine(/"message":"Consuming /, { timeoutMs: 60_000 })
    return {
      orders,
      notifiers,
      named: [
        ...orders.map((service, i) => ({ name: `order-${i + 1}`, service })),
        ...notifiers.map((service, i) => ({ name: `notification-${i + 1}`, service }))
      ]
    } satisfies System
  })

export const orderUrl = (service: RunningService) => `http://127.0.0.1:${service.port}`

// ---------------------------------------------------------------------------------------------
// The load: the real verify tool

/** `npm run verify -- --json`'s account. */
export type VerifyAccount = Account

export interface VerifyRun {
  readonly startedAt: number
  /** Whether it has stopped posting (it says so on stderr when it starts following the orders). */
  readonly postingDone: () => boolean
  /** Its exit code and its account, once it has finished. */
  readonly result: Effect.Effect<{ readonly exitCode: number | null; readonly account: VerifyAccount; readonly stderr: string }>
}

/**
 * Runs `node --import tsx src/verify/main.ts --url ... --json` as a child process, as an operator
 * would run `npm run verify`; killed with the scope if still running.
 */
export const startVerify = (options: {
  readonly urls: ReadonlyArray<string>
  readonly orders: number
  readonly rate: number
  readonly concurrency: number
  readonly waitSeconds: number
}) =>
  Effect.acquireRelease(
    Effect.sync(() => {
      const args = [
        ...options.urls.flatMap((url) => ["--url", url]),
        "--orders", String(options.orders),
        "--rate", String(options.rate),
        "--concurrency", String(options.concurrency),
        "--wait", String(options.waitSeconds),
        "--json"
      ]
      const child = spawn(process.execPath, ["--import", "tsx", "src/verify/main.ts", ...args], { stdio: ["ignore", "pipe", "pipe"] })
      let stdout = ""
      let stderr = ""
      child.stdout!.on("data", (chunk: Buffer) => (stdout += chunk.toString("utf8")))
      child.stderr!.on("data", (chunk: Buffer) => (stderr += chunk.toString("utf8")))
      const closed = once(child, "close").then(([code]) => code as number | null)
      const result = Effect.promise(async () => {
        const exitCode = await closed
        const json = stdout.slice(stdout.indexOf("{"))
        try {
          return { exitCode, account: JSON.parse(json) as VerifyAccount, stderr }
        } catch {
          throw new Error(`verify (exit ${exitCode}) printed no account:\n${stdout}\n${stderr}`)
        }
      })
      const run: VerifyRun = {
        startedAt: Date.now(),
        postingDone: () => child.exitCode !== null || /^waiting for \d+ of \d+ accepted orders/m.test(stderr),
        result
      }
      return { child, run }
    }),
    ({ child }) =>
      Effect.promise(async () => {
        if (child.exitCode === null && child.signalCode === null) {
          child.kill("SIGKILL")
          await once(child as ChildProcess, "close")
        }
      })
  ).pipe(Effect.map(({ run }) => run))

// ---------------------------------------------------------------------------------------------
// The services' own account, from their log lines

interface LogEvent {
  readonly at: number
  readonly message: string
}

const events = (service: LogSource): ReadonlyArray<LogEvent> =>
  service.lines.flatMap((line) => {
    try {
      const parsed = JSON.parse(line) as { message?: unknown; timestamp?: string }
      return typeof parsed.message === "string" && parsed.timestamp !== undefined
        ? [{ at: Date.parse(parsed.timestamp), message: parsed.message }]
        : []
    } catch {
      return []
    }
  })

/** `amqp://guest:***@127.0.0.1:5682` as `r2`; any other address (a proxy) as its port. */
export const nodeOf = (url: string, aliases: Readonly<Record<number, string>> = {}) => {
  const port = Number(/:(\d+)(?:[/?]|$)/.exec(url)?.[1])
  return CLUSTER_NODES.find((node) => node.amqpPort === port)?.name.split("@")[0] ?? aliases[port] ?? `port ${port}`
}

export interface Failover {
  readonly from: string
  readonly to: string | undefined
  readonly reason: string
  readonly lostAt: number
  /** From the "Connection to ... lost" line to the next "Connected to" line; undefined if none came. */
  readonly reconnectMs: number | undefined
}

/** Every connection the service lost, and where and how soon it connected again. */
export const failovers = (service: LogSource, aliases: Readonly<Record<number, string>> = {}): ReadonlyArray<Failover> => {
  const log = events(service)
  return log.flatMap((event, index) => {
    const lost = /^Connection to (\S+) lost \((.*)\); reconnecting$/.exec(event.message)
    if (lost === null) return []
    const back = log.slice(index + 1).find((later) => later.message.startsWith("Connected to "))
    return [{
      from: nodeOf(lost[1]!, aliases),
      to: back === undefined ? undefined : nodeOf(back.message.slice("Connected to ".length), aliases),
      reason: lost[2]!,
      lostAt: event.at,
      reconnectMs: back === undefined ? undefined : back.at - event.at
    }]
  })
}

/** Warnings matching `pattern` logged at or after `since`: how many, over what window, and why. */
export const warningsSince = (service: LogSource, pattern: RegExp, since: number) => {
  const matching = events(service).filter((event) => event.at >= since && pattern.test(event.message))
  return {
    count: matching.length,
    firstAfterMs: matching.length === 0 ? undefined : matching[0]!.at - since,
    lastAfterMs: matching.length === 0 ? undefined : matching.at(-1)!.at - since,
    reasons: [...new Set(matching.map((event) => event.message.replace(/\d+ command\(s\)/, "N command(s)")))].slice(0, 3)
  }
}

/** The outbox relay's "not confirmed" warnings: publishes refused (nacked, no channel, no confirm in time). */
export const RELAY_REFUSED = /^Outbox relay: /
/** A notification service's event publish that was refused and is retried. */
export const EVENT_REFUSED = /^Could not publish /

/** How many sends the notification services started (one per attempt) at or after `since`. */
export const sendsSince = (notifiers: ReadonlyArray<LogSource>, since = 0) =>
  notifiers.flatMap(events).filter((event) => event.at >= since && event.message.startsWith("Sending notification for order ")).length

/** Orders whose send was started more than once, across the notification services: redeliveries. */
export const repeatedSends = (notifiers: ReadonlyArray<LogSource>) => {
  const counts = new Map<string, number>()
  for (const event of notifiers.flatMap(events)) {
    const match = /^Sending notification for order (\S+)$/.exec(event.message)
    if (match !== null) counts.set(match[1]!, (counts.get(match[1]!) ?? 0) + 1)
  }
  return [...counts.values()].filter((n) => n > 1).length
}

/** Each process's failovers, for the report. */
export const failoverFigures = (system: System, aliases: Readonly<Record<number, string>> = {}) =>
  Object.fromEntries(system.named.map(({ name, service }) => [
    name,
    failovers(service, aliases).map(({ from, lostAt, reason, reconnectMs, to }) => ({
      from,
      to,
      reconnectMs,
      reason: reason.slice(0, 80),
      lostAt: new Date(lostAt).toISOString().slice(11, 23)
    }))
  ]))

// ---------------------------------------------------------------------------------------------
// The outbox, as the store has it

export interface OutboxSample {
  readonly at: number
  readonly pending: number
  /** Age of the oldest command waiting, in milliseconds (0 when none). */
  readonly oldestMs: number
}

/**
 * Samples the outbox (pending commands, age of the oldest) every 250 ms until stopped: the lag the
 * relay had, whichever replica was relaying.
 */
export const sampleOutbox = (scenario: Scenario) =>
  Effect.gen(function*() {
    const samples: Array<OutboxSample> = []
    const probe = Effect.flatMap(
      scenario.query<{ pending: string; oldest: string | null }>("SELECT COUNT(*) AS pending, MIN(created_at) AS oldest FROM outbox"),
      ([row]) =>
        Effect.sync(() => {
          const at = Date.now()
          samples.push({ at, pending: Number(row?.pending ?? 0), oldestMs: row?.oldest == null ? 0 : Math.max(0, at - Number(row.oldest)) })
        })
    )
    // Until the orders' own tables exist (the replicas run the migrations as they start).
    yield* until(
      scenario.query<{ n: string }>("SELECT COUNT(*) AS n FROM information_schema.tables WHERE table_schema = current_schema() AND table_name = 'outbox'"),
      ([row]) => Number(row?.n) === 1,
      { timeoutMs: 60_000, what: "the outbox table" }
    )
    const fiber = yield* Effect.forkScoped(Effect.forever(Effect.zipRight(probe, Effect.sleep("250 millis"))))
    return {
      samples: samples as ReadonlyArray<OutboxSample>,
      stop: Fiber.interrupt(fiber),
      /** The worst the outbox got at or after `since`, and when it was empty again after that. */
      figures: (since: number) => {
        const after = samples.filter((sample) => sample.at >= since)
        const worst = after.reduce((max, sample) => (sample.oldestMs > max.oldestMs ? sample : max), { at: since, pending: 0, oldestMs: 0 })
        const drained = after.find((sample) => sample.at > worst.at && sample.pending === 0)
        return {
          outboxMaxPending: Math.max(0, ...after.map((sample) => sample.pending)),
          outboxMaxLagMs: worst.oldestMs,
          outboxEmptyAgainAfterMs: drained === undefined ? undefined : drained.at - since
        }
      }
    }
  })

/**
 * The longest stretch after `since` in which no command was confirmed by the broker (the orders'
 * `queued_at`, which the relay sets once the broker has confirmed), and when the first came.
 */
export const relayGap = (scenario: Scenario, since: number, to: number) =>
  Effect.map(
    scenario.query<{ queued_at: string }>(
      `SELECT queued_at FROM orders WHERE queued_at >= ${Math.floor(since - 2000)} AND queued_at <= ${Math.floor(to)} ORDER BY queued_at`
    ),
    (rows) => {
      const times = rows.map((row) => Number(row.queued_at))
      const firstAfter = times.find((t) => t >= since)
      let longest = 0
      for (let i = 1; i < times.length; i++) if (times[i - 1]! >= since - 2000) longest = Math.max(longest, times[i]! - times[i - 1]!)
      return { firstConfirmAfterMs: firstAfter === undefined ? undefined : firstAfter - since, longestConfirmGapMs: longest }
    }
  )

// ---------------------------------------------------------------------------------------------
// Checks

/** The leader of `queue`, as a running node other than `except` lists it. */
export const leaderNow = (queue: string, except: ReadonlyArray<string> = []) =>
  Effect.promise(() => leaderOf(aliveNode(except), queue).catch(() => undefined))

/** The account without the id lists, for the report. */
export const summary = ({ duplicatedIds, lostIds, refusals, ...rest }: VerifyAccount) => ({
  ...rest,
  ...(lostIds.length > 0 ? { firstLost: lostIds.slice(0, 5) } : {}),
  ...(refusals.length > 0 ? { firstRefusal: refusals[0] } : {}),
  ...(duplicatedIds.length > 0 ? { firstDuplicated: duplicatedIds.slice(0, 3) } : {})
})
