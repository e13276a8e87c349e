import * as amqp from "amqplib"
import { Effect, Fiber, Layer, Logger, LogLevel, Ref } from "effect"
import { execFile } from "node:child_process"
import { once } from "node:events"
import { rmSync } from "node:fs"
import { tmpdir } from "node:os"
import { join } from "node:path"
import { countMessages, eventually, uniqueQueueName } from "./broker"
import { FAULT_AMQP_URL, FAULT_NODE, rabbitmqctl } from "./privateBroker"
import { freePort, type ServiceProcess, spawnService } from "./processes"

/**
 * The fault suite's rig: the real services as child processes against the private node, orders
 * posted over HTTP, and an account of every accepted order from the consumers' own log lines
 * and the broker's dead-letter queue.
 */

// ---------------------------------------------------------------------------------------------
// Services

export interface RunningService extends ServiceProcess {
  readonly port: number
}

const sharedEnv = (queue: string) => ({
  AMQP_URL: FAULT_AMQP_URL,
  COMMAND_QUEUE: queue,
  ORDER_EVENTS_QUEUE: `${queue}.events`,
  LOG_FORMAT: "json",
  // The consumer logs each ack at debug level: the suite's proof that an order was processed.
  LOG_LEVEL: "debug"
})

/** A service that never got ready says why: its last lines go into the failure. */
const explainedBy = <A>(service: ServiceProcess, wait: Effect.Effect<A>) =>
  Effect.catchAllDefect(wait, (defect) =>
    Effect.dieMessage(`${String(defect)}\nLast lines of the service:\n${service.lines.slice(-20).join("\n")}`))

/** The SQLite store of a test's order service: the same for every start on one queue, removed with the queue. */
const storeFolderOf = (queue: string) => join(tmpdir(), `orders-${queue}`)

/** The order API as a child process, once it answers ready. */
export const startOrderService = (queue: string, env: Record<string, string | number> = {}) =>
  Effect.gen(function*() {
    const port = yield* freePort
    const service = yield* spawnService("order/main.ts", {
      ...sharedEnv(queue),
      DATABASE_URL: join(storeFolderOf(queue), "orders.db"),
      PORT: port,
      ...env
    })
    yield* Effect.addFinalizer(() => killTree(service))
    yield* explainedBy(service, waitForReadiness(port, 200, { what: "the order service to be ready" }))
    return { ...service, port } satisfies RunningService
  })

/** A notification service as a child process, once it answers ready. */
export const startNotificationService = (queue: string, env: Record<string, string | number> = {}) =>
  Effect.gen(function*() {
    const port = yield* freePort
    const service = yield* spawnService("notification/main.ts", {
      ...sharedEnv(queue),
      NOTIFICATION_HEALTH_PORT: port,
      NOTIFICATION_SEND_DELAY_MS: 0,
      ...env
    })
    yield* Effect.addFinalizer(() => killTree(service))
    yield* explainedBy(service, waitForReadiness(port, 200, { what: "the notification service to be ready" }))
    return { ...service, port } satisfies RunningService
  })

/** Kills the service process outright; the test's finalizer for each service. */
const killTree = (service: ServiceProcess) =>
  Effect.sync(() => {
    if (service.child.exitCode === null && service.child.signalCode === null) service.child.kill("SIGKILL")
  })

/**
 * Sends `signal` to the service (its own node process: `spawnService` runs no wrapper) and waits
 * until its output is fully read: 'close' comes after the last line on the pipes, so the account
 * sees every line.
 */
export const killAndDrain = (service: ServiceProcess, signal: NodeJS.Signals) =>
  Effect.promise(() => {
    const closed = once(service.child, "close")
    service.child.kill(signal)
    return closed.then(() => undefined)
  })

/** GET /health/ready's status, or 0 when nothing answers. */
export const readiness = (port: number) =>
  Effect.promise(() =>
    fetch(`http://127.0.0.1:${port}/health/ready`, { signal: AbortSignal.timeout(2_000) })
      .then(async (response) => {
        await response.arrayBuffer()
        return response.status
      })
      .catch(() => 0)
  )

/** GET /health/ready's body: the order service's account of its store, broker and outbox. */
export const readinessBody = (port: number) =>
  Effect.promise(() =>
    fetch(`http://127.0.0.1:${port}/health/ready`, { signal: AbortSignal.timeout(2_000) })
      .then((response) => response.json() as Promise<{ store: string; broker: string; outbox: { pending: number; oldestSeconds: number } }>)
  )

/** Polls readiness until it is `status`; resolves with the time it took. */
export const waitForReadiness = (
  port: number,
  status: 200 | 503,
  options: { readonly timeoutMs?: number; readonly what?: string } = {}
) =>
  until(readiness(port), (s) => s === status, { timeoutMs: options.timeoutMs ?? 30_000, what: options.what ?? `/health/ready = ${status}` })

/**
 * `eventually` for an Effect probe (where no event exists to wait on): polls until `check` holds,
 * dies with the last value after the deadline, and succeeds with the milliseconds it took.
 */
export const until = <A>(
  probe: Effect.Effect<A>,
  check: (value: A) => boolean,
  options: { readonly timeoutMs?: number; readonly what?: string } = {}
) =>
  Effect.gen(function*() {
    const start = Date.now()
    yield* eventually(() => Effect.runPromise(probe), check, { timeoutMs: options.timeoutMs ?? 30_000, what: options.what ?? "a condition" })
    return Date.now() - start
  })

// ---------------------------------------------------------------------------------------------
// Orders

export interface OrderAnswer {
  /** HTTP status, or 0 when the request failed or hung past the client's limit. */
  readonly status: number
  readonly orderId?: string | undefined
  readonly startedAt: number
  readonly finishedAt: number
  readonly latencyMs: number
  readonly error?: string | undefined
}

/** POSTs one order. A request that takes `hangAfterMs` counts as hung (status 0). */
export const postOrder = (port: number, hangAfterMs = 30_000) =>
  Effect.promise(async (): Promise<OrderAnswer> => {
    const startedAt = Date.now()
    const done = (status: number, extra: Partial<OrderAnswer> = {}): OrderAnswer => {
      const finishedAt = Date.now()
      return { status, startedAt, finishedAt, latencyMs: finishedAt - startedAt, ...extra }
    }
    try {
      const response = await fetch(`http://127.0.0.1:${port}/orders`, {
        method: "POST",
        headers: { "content-type": "application/json" },
        body: JSON.stringify({ userId: 42 }),
        signal: AbortSignal.timeout(hangAfterMs)
      })
      const body = (await response.json()) as { order?: { orderId?: string }; _tag?: string }
      return done(response.status, response.status === 201 ? { orderId: body.order?.orderId } : { error: body._tag })
    } catch (error) {
      return done(0, { error: String(error) })
    }
  })

/** POSTs `count` orders, `concurrency` at a time. */
export const postOrders = (port: number, count: number, concurrency: number) =>
  Effect.forEach(Array.from({ length: count }), () => postOrder(port), { concurrency })

/**
 * Keeps posting orders from `workers` loops (each pausing `pauseMs` between its requests, to keep
 * the rate modest) until `stop` is run; `stop` lets every request in flight finish, so no accepted
 * order goes unrecorded.
 */
export const postContinuously = (port: number, options: { readonly workers: number; readonly pauseMs: number; readonly hangAfterMs?: number }) =>
  Effect.gen(function*() {
    const answers: Array<OrderAnswer> = []
    const stopping = yield* Ref.make(false)
    const worker = Effect.gen(function*() {
      while (!(yield* Ref.get(stopping))) {
        answers.push(yield* postOrder(port, options.hangAfterMs))
        yield* Effect.sleep(options.pauseMs)
      }
    })
    const fiber = yield* Effect.forkScoped(Effect.all(Array.from({ length: options.workers }, () => worker), { concurrency: "unbounded" }))
    return {
      answers: answers as ReadonlyArray<OrderAnswer>,
      stop: Ref.set(stopping, true).pipe(Effect.zipRight(Fiber.join(fiber)), Effect.as(answers as ReadonlyArray<OrderAnswer>))
    }
  })

export const acceptedIds = (answers: ReadonlyArray<OrderAnswer>) =>
  answers.flatMap((answer) => (answer.status === 201 && answer.orderId !== undefined ? [answer.orderId] : []))

// ---------------------------------------------------------------------------------------------
// The broker

/** The prefix of the delay queues a notification service on `queue` declares (`<queue>.retry.<delay>ms`). */
const retryPrefixOf = (queue: string) => `${queue}.retry.`

/** The delay queues of `queue` that exist on the private node, whatever retry settings declared them. */
export const retryQueuesOnNode = (queue: string) =>
  Effect.promise(async () =>
    (await rabbitmqctl("list_queues", "--no-table-headers", "name"))
      .split("\n")
      .map((name) => name.trim())
      .filter((name) => name.startsWith(retryPrefixOf(queue)))
  )

/**
 * A unique command queue for one test; it, its dead-letter queue, its delay queues and the events
 * queues of an order service on it are deleted when the scope closes (after the broker has been
 * brought back, see `brokerRestoredOnExit`).
 */
export const faultQueue = (label: string) =>
  Effect.acquireRelease(Effect.sync(() => uniqueQueueName(`faults.${label}`)), (queue) =>
    Effect.promise(async () => {
      const delayQueues = await Effect.runPromise(retryQueuesOnNode(queue)).catch(() => [])
      for (const name of [queue, `${queue}.dlq`, ...delayQueues, `${queue}.events`, `${queue}.events.dlq`]) {
        await rabbitmqctl("delete_queue", name).catch(() => undefined)
      }
      rmSync(storeFolderOf(queue), { recursive: true, force: true })
    }))

/** Whatever a test did to the private node, it runs its app at normal memory limits afterwards. */
export const brokerRestoredOnExit = Effect.addFinalizer(() =>
  Effect.promise(async () => {
    await rabbitmqctl("start_app").catch(() => undefined)
    await rabbitmqctl("set_vm_memory_high_watermark", "0.4").catch(() => undefined)
  }))

/** Whether the private node has a resource alarm (memory, disk) in effect right now. */
export const alarmInEffect = Effect.promise(
  () =>
    new Promise<boolean>((resolve) =>
      execFile("rabbitmq-diagnostics", ["-q", "-n", FAULT_NODE, "check_alarms"], { timeout: 60_000 }, (error) =>
        resolve(error !== null))
    )
)

/** A memory high watermark no node can stay under raises the alarm at once: the broker blocks publishers. */
export const blockPublishing = Effect.zipRight(
  Effect.promise(() => rabbitmqctl("set_vm_memory_high_watermark", "0.000001")),
  until(alarmInEffect, (alarm) => alarm, { what: "the memory alarm" })
)

export const unblockPublishing = Effect.zipRight(
  Effect.promise(() => rabbitmqctl("set_vm_memory_high_watermark", "0.4")),
  until(alarmInEffect, (alarm) => !alarm, { what: "the memory alarm to clear" })
)

/** Messages in a queue on the private node, ready and unacknowledged, at this moment (see `countMessages`). */
export const queueDepth = (queue: string) => Effect.promise(() => countMessages(rabbitmqctl, queue))

/**
 * Commands of `queue` not settled for good: in the queue itself (ready or unacknowledged) or waiting
 * in one of its delay queues, counted in one go on the node. The delay queues are counted first: a
 * command that comes back from one (at-least-once: it leaves the delay queue only once the command
 * queue holds it) is seen in one or the other.
 */
export const commandsPending = (queue: string) =>
  Effect.promise(async () => {
    const total = await rabbitmqctl(
      "eval",
      `Count = fun(N) -> {ok, Q} = rabbit_amqqueue:lookup(rabbit_misc:r(<<"/">>, queue, N)), {Ra, _} = amqqueue:get_pid(Q), ` +
        `{ok, {_, T}, _} = ra:local_query({Ra, node()}, fun rabbit_fifo:query_messages_total/1), T end, ` +
        `Prefix = <<${JSON.stringify(retryPrefixOf(queue))}/utf8>>, ` +
        `Delays = [N || Q <- rabbit_amqqueue:list(<<"/">>), N <- [element(4, amqqueue:get_name(Q))], ` +
        `binary:longest_common_prefix([N, Prefix]) =:= byte_size(Prefix)], ` +
        `lists:sum([Count(N) || N <- Delays]) + Count(<<${JSON.stringify(queue)}/utf8>>).`
    )
    const count = Number(total.trim())
    if (!Number.isInteger(count)) throw new Error(`rabbitmqctl eval did not count the pending commands of ${queue}: ${total.trim()}`)
    return count
  })

/** A dead-lettered command: its order, and the headers it carries (its failure story, contract §5). */
export interface DeadLetter {
  readonly orderId: string
  readonly headers: Record<string, unknown>
}

/** Takes every message out of the dead-letter queue. */
export const drainDeadLetters = (queue: string) =>
  Effect.promise(async () => {
    const connection = await amqp.connect(FAULT_AMQP_URL)
    try {
      const channel = await connection.createChannel()
      const deadLetters: Array<DeadLetter> = []
      for (;;) {
        const message = await channel.get(`${queue}.dlq`, { noAck: true })
        if (message === false) return deadLetters
        deadLetters.push({ orderId: String(message.properties.messageId), headers: message.properties.headers ?? {} })
      }
    } finally {
      await connection.close().catch(() => undefined)
    }
  })

// ---------------------------------------------------------------------------------------------
// The account

interface LogLine {
  readonly message: unknown
  readonly logLevel: string
  readonly timestamp?: string
  readonly annotations?: Record<string, unknown>
}

/** Whatever printed the lines to account for: a service process, or a service run in-process (`jsonLogRecorder`). */
export type LogSource = Pick<ServiceProcess, "lines">

/**
 * For a service run in-process: a Layer that logs as a child process of the rig does (LOG_FORMAT=json,
 * LOG_LEVEL=debug), into `lines` instead of stdout, so the same account reads it.
 */
export const jsonLogRecorder = () => {
  const lines: Array<string> = []
  const layer = Layer.merge(
    Logger.replace(Logger.defaultLogger, Logger.map(Logger.jsonLogger, (line) => void lines.push(line))),
    Logger.minimumLogLevel(LogLevel.Debug)
  )
  return { lines: lines as ReadonlyArray<string>, layer }
}

const parse = (line: string): LogLine | undefined => {
  try {
    return JSON.parse(line) as LogLine
  } catch {
    return undefined
  }
}

const count = (lines: ReadonlyArray<string>, pattern: RegExp) => {
  const counts = new Map<string, number>()
  for (const line of lines) {
    const message = parse(line)?.message
    const match = typeof message === "string" ? pattern.exec(message) : null
    if (match !== null) counts.set(match[1]!, (counts.get(match[1]!) ?? 0) + 1)
  }
  return counts
}

/** Per orderId: send attempts ("Sending notification for order ...") and acks ("Notification sent ..."). */
export const consumerRecord = (consumers: ReadonlyArray<LogSource>) => {
  const lines = consumers.flatMap((consumer) => consumer.lines)
  return {
    attempts: count(lines, /^Sending notification for order (\S+)$/),
    acked: count(lines, /^Notification sent for order (\S+)$/)
  }
}

export interface Account {
  readonly accepted: number
  readonly processed: number
  readonly deadLettered: number
  readonly deadLetteredIds: ReadonlyArray<string>
  /** What the dead-letter queue held, headers and all. */
  readonly deadLetters: ReadonlyArray<DeadLetter>
  readonly lost: ReadonlyArray<string>
  /** Acks beyond the first for one order: sends repeated because an ack was lost in a fault. */
  readonly duplicates: number
  /** Most send attempts any one order had. */
  readonly maxAttempts: number
}

/**
 * Waits until the command queue and its delay queues are empty and every accepted order is acked or
 * dead-lettered (or the deadline passes), then settles the account. Call after the last order was
 * posted.
 */
export const settleAccount = (
  queue: string,
  accepted: ReadonlyArray<string>,
  consumers: ReadonlyArray<LogSource>,
  options: { readonly timeoutMs?: number } = {}
) =>
  Effect.gen(function*() {
    const timeoutMs = options.timeoutMs ?? 60_000
    // The broker's word that every command is settled (acked, or moved to the dead-letter queue), not
    // waiting for a delayed retry; twice in a row, so a command caught crossing between a queue and a
    // delay queue in the one count is not taken for settled...
    yield* until(Effect.zipWith(commandsPending(queue), commandsPending(queue), (a, b) => a + b), (n) => n === 0, {
      timeoutMs,
      what: `queue ${queue} and its delay queues to be empty`
    })
    const drained = yield* drainDeadLetters(queue)
    const deadLetters = new Set(drained.map(({ orderId }) => orderId))
    // ...then the consumers' ack lines, which may trail the acks by a few milliseconds on the pipe.
    const unaccounted = () => {
      const { acked } = consumerRecord(consumers)
      return accepted.filter((id) => !acked.has(id) && !deadLetters.has(id)).length
    }
    yield* until(Effect.sync(unaccounted), (n) => n === 0, { timeoutMs: 5_000 }).pipe(Effect.catchAllDefect(() => Effect.void))
    const { acked, attempts } = consumerRecord(consumers)
    const ids = new Set(accepted)
    return {
      accepted: ids.size,
      processed: [...ids].filter((id) => acked.has(id)).length,
      deadLettered: [...ids].filter((id) => deadLetters.has(id)).length,
      deadLetteredIds: [...deadLetters],
      deadLetters: drained,
      lost: [...ids].filter((id) => !acked.has(id) && !deadLetters.has(id)),
      duplicates: [...acked.values()].reduce((sum, n) => sum + n - 1, 0),
      maxAttempts: Math.max(0, ...attempts.values())
    } satisfies Account
  })

/** What the order store says became of the accepted orders (contract §8: each ends notified or failed). */
export interface StoreAccount {
  readonly accepted: number
  readonly notified: number
  readonly failed: number
  /** Still `accepted` or `queued`, or unknown to the store, when the account was settled. */
  readonly lost: ReadonlyArray<string>
  /** Orders whose notification was sent more than once (distinct NotificationSent events). */
  readonly duplicated: number
}

const orderStatus = (port: number, orderId: string) =>
  Effect.promise(() =>
    fetch(`http://127.0.0.1:${port}/orders/${orderId}`, { signal: AbortSignal.timeout(5_000) })
      .then((response) => (response.ok ? response.json() as Promise<{ status: string; notifications: number }> : undefined))
      .catch(() => undefined)
  )

const storeAccountNow = (port: number, accepted: ReadonlyArray<string>) =>
  Effect.map(
    Effect.forEach(accepted, (id) => Effect.map(orderStatus(port, id), (order) => ({ id, order })), { concurrency: 20 }),
    (orders): StoreAccount => ({
      accepted: orders.length,
      notified: orders.filter(({ order }) => order?.status === "notified").length,
      failed: orders.filter(({ order }) => order?.status === "failed").length,
      lost: orders.filter(({ order }) => order?.status !== "notified" && order?.status !== "failed").map(({ id }) => id),
      duplicated: orders.filter(({ order }) => (order?.notifications ?? 0) > 1).length
    })
  )

/**
 * Asks the order service (GET /orders/{id}) until every accepted order is `notified` or `failed`,
 * or the deadline passes; then the account from the store.
 */
export const settleStoreAccount = (port: number, accepted: ReadonlyArray<string>, options: { readonly timeoutMs?: number } = {}) =>
  Effect.gen(function*() {
    const deadline = Date.now() + (options.timeoutMs ?? 60_000)
    // Polled (the store's state is what there is to wait on), asking only for the orders still open.
    let open = accepted
    while (open.length > 0 && Date.now() < deadline) {
      open = (yield* storeAccountNow(port, open)).lost
      if (open.length > 0) yield* Effect.sleep("250 millis")
    }
    return yield* storeAccountNow(port, accepted)
  })

// ---------------------------------------------------------------------------------------------
// Figures

/** The figures a scenario produced, printed for docs/faults.md and docs/scale.md (lists of ids left out). */
export const report = (scenario: string, figures: Record<string, unknown>) =>
  Effect.sync(() =>
    console.log(`[fault figures] ${scenario}: ${
      JSON.stringify(figures, (key, value) => (key === "deadLetteredIds" || key === "deadLetters" ? undefined : value))
    }`)
  )

/** When (epoch ms, from the service's own log timestamps) it printed lines matching `pattern`. */
export const loggedAt = (service: LogSource, pattern: RegExp): ReadonlyArray<number> =>
  service.lines.flatMap((line) => {
    const parsed = parse(line)
    return typeof parsed?.message === "string" && parsed.timestamp !== undefined && pattern.test(parsed.message)
      ? [Date.parse(parsed.timestamp)]
      : []
  })

/** Per orderId (the line's `orderId` annotation): when the service printed lines matching `pattern`, in order. */
export const loggedAtPerOrder = (service: LogSource, pattern: RegExp): ReadonlyMap<string, ReadonlyArray<number>> => {
  const times = new Map<string, Array<number>>()
  for (const line of service.lines) {
    const parsed = parse(line)
    const orderId = parsed?.annotations?.["orderId"]
    if (typeof orderId !== "string" || typeof parsed?.message !== "string" || parsed.timestamp === undefined) continue
    if (!pattern.test(parsed.message)) continue
    const seen = times.get(orderId)
    if (seen === undefined) times.set(orderId, [Date.parse(parsed.timestamp)])
    else seen.push(Date.parse(parsed.timestamp))
  }
  return times
}

/** From the service's "Connection ... lost" line to its next line matching `back`: its own downtime. */
export const downtimeMs = (service: LogSource, back: RegExp) => {
  const lostAt = loggedAt(service, /^Connection to .* lost/)[0]
  const backAt = lostAt === undefined ? undefined : loggedAt(service, back).find((t) => t >= lostAt)
  return lostAt === undefined || backAt === undefined ? -1 : backAt - lostAt
}

export const percentile = (values: ReadonlyArray<number>, p: number) => {
  if (values.length === 0) return 0
  const sorted = [...values].sort((a, b) => a - b)
  return sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))]!
}
