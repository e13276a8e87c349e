import { describe, expect, it } from "@effect/vitest"
import { Effect } from "effect"
import {
  acceptedIds,
  brokerRestoredOnExit,
  consumerRecord,
  downtimeMs,
  loggedAt,
  faultQueue,
  type OrderAnswer,
  percentile,
  postContinuously,
  postOrders,
  readiness,
  readinessBody,
  report,
  settleAccount,
  settleStoreAccount,
  startNotificationService,
  startOrderService,
  until,
  waitForReadiness
} from "../support/faultRig"
import { FAULT_AMQP_URL, rabbitmqctl } from "../support/privateBroker"
import { freePort } from "../support/processes"

const PUBLISH_TIMEOUT_MS = 2_000
/** What an HTTP round trip on loopback may add to the service's own deadline. */
const HTTP_SLACK_MS = 250

const refusalsAmong = (answers: ReadonlyArray<OrderAnswer>) => answers.filter((a) => a.status !== 201)

/** Both services, an order stream running, and the orders accepted before any fault. */
const runningSystem = (label: string) =>
  Effect.gen(function*() {
    const queue = yield* faultQueue(label)
    yield* brokerRestoredOnExit
    const orders = yield* startOrderService(queue, { PUBLISH_TIMEOUT_MS })
    const consumer = yield* startNotificationService(queue, { NOTIFICATION_PREFETCH: 20 })
    const poster = yield* postContinuously(orders.port, { workers: 4, pauseMs: 20, hangAfterMs: PUBLISH_TIMEOUT_MS + 10_000 })
    yield* until(Effect.sync(() => acceptedIds(poster.answers).length), (n) => n >= 100, { what: "100 orders accepted before the fault" })
    return { queue, orders, consumer, poster }
  })

/**
 * One subscription per connection: a delivery settled on the wrong channel (a stale delivery tag
 * after a reconnect) makes the broker close the channel with 406 and the consumer subscribe again.
 */
const subscriptionsPerConnection = (consumer: Parameters<typeof consumerRecord>[0][number]) => ({
  connections: loggedAt(consumer, /^Connected to /).length,
  subscriptions: loggedAt(consumer, /^Consuming /).length
})

/** Waits until an order accepted after `since` has been processed: the consumer works again. */
const consumerResumedAfter = (since: number, answers: ReadonlyArray<OrderAnswer>, consumer: Parameters<typeof consumerRecord>[0][number]) =>
  until(
    Effect.sync(() => {
      const { acked } = consumerRecord([consumer])
      return answers.some((a) => a.startedAt > since && a.status === 201 && acked.has(a.orderId!))
    }),
    (resumed) => resumed,
    { what: "the consumer to process an order accepted after the fault" }
  )

const firstAcceptanceAfter = (since: number, answers: ReadonlyArray<OrderAnswer>) =>
  until(
    Effect.sync(() => answers.find((a) => a.startedAt >= since && a.status === 201)),
    (answer) => answer !== undefined,
    { what: "an order accepted after the broker's return" }
  ).pipe(Effect.zipRight(Effect.sync(() => answers.find((a) => a.startedAt >= since && a.status === 201)!)))

describe("the broker fails under the services", () => {
  it.scopedLive("closing every connection: both services reconnect by themselves and nothing is lost", () =>
    Effect.gen(function*() {
      const { consumer, orders, poster, queue } = yield* runningSystem("close-connections")

      yield* Effect.promise(() => rabbitmqctl("close_all_connections", "fault-injection suite"))
      // rabbitmqctl returns once the connections are closed: the services are cut off from here.
      const cutAt = Date.now()
      yield* orders.waitForLine(/Connection to .* lost/)
      yield* consumer.waitForLine(/Connection to .* lost/)
      yield* waitForReadiness(orders.port, 200)
      const orderReadyMs = Date.now() - cutAt
      yield* waitForReadiness(consumer.port, 200)
      const consumerReadyMs = Date.now() - cutAt
      const accepted = yield* firstAcceptanceAfter(cutAt, poster.answers)
      yield* consumerResumedAfter(cutAt, poster.answers, consumer)

      const answers = yield* poster.stop
      const account = yield* settleAccount(queue, acceptedIds(answers), [consumer])
      const refusals = refusalsAmong(answers)
      yield* report("close_all_connections", {
        orders: answers.length,
        ...account,
        lost: account.lost.length,
        refused: refusals.length,
        orderReconnectMs: downtimeMs(orders, /^Connected to /),
        consumerResubscribeMs: downtimeMs(consumer, /^Consuming /),
        orderReadyAfterCutMs: orderReadyMs,
        consumerReadyAfterCutMs: consumerReadyMs,
        acceptingAgainAfterCutMs: accepted.finishedAt - cutAt,
        maxRefusalMs: Math.max(0, ...refusals.map((a) => a.latencyMs))
      })
      expect(account.lost).toEqual([])
      expect(account.deadLettered).toBe(0)
      expect(subscriptionsPerConnection(consumer)).toEqual({ connections: 2, subscriptions: 2 })
      // Neither process was restarted.
      expect([orders.child.exitCode, consumer.child.exitCode]).toEqual([null, null])
      expect(refusals.filter((a) => a.status !== 503)).toEqual([])
      expect(refusals.filter((a) => a.latencyMs > PUBLISH_TIMEOUT_MS + HTTP_SLACK_MS)).toEqual([])
      expect(accepted.finishedAt - cutAt).toBeLessThan(5_000)
      // Each service's own account: back on a new connection, the consumer subscribed again.
      for (const ms of [downtimeMs(orders, /^Connected to /), downtimeMs(consumer, /^Consuming /)]) {
        expect(ms).toBeGreaterThanOrEqual(0)
        expect(ms).toBeLessThan(5_000)
      }
    }))

  it.scopedLive("AMQP_URL with several nodes: a node that does not answer is skipped, on start and on every reconnect", () =>
    Effect.gen(function*() {
      const queue = yield* faultQueue("failover")
      const deadNode = `amqp://guest:guest@127.0.0.1:${yield* freePort}`
      const env = { AMQP_URL: `${deadNode},${FAULT_AMQP_URL}` }
      const orders = yield* startOrderService(queue, env)
      const consumer = yield* startNotificationService(queue, env)
      const first = yield* postOrders(orders.port, 20, 4)
      yield* Effect.promise(() => rabbitmqctl("close_all_connections", "fault-injection suite"))
      yield* orders.waitForLine(/Connection to .* lost/)
      yield* consumer.waitForLine(/Connection to .* lost/)
      yield* waitForReadiness(orders.port, 200)
      yield* waitForReadiness(consumer.port, 200)
      const second = yield* postOrders(orders.port, 20, 4)
      const account = yield* settleAccount(queue, acceptedIds([...first, ...second]), [consumer])
      yield* report("AMQP_URL failover", { ...account, lost: account.lost.length, reconnectMs: downtimeMs(orders, /^Connected to /) })
      expect([...first, ...second].filter((a) => a.status !== 201)).toEqual([])
      expect(account.lost).toEqual([])
      // The dead node was tried (and said so, password masked) before the live one was used.
      expect(orders.lines.some((line) => line.includes("Broker not reachable at amqp://guest:***@127.0.0.1"))).toBe(true)
      expect(downtimeMs(consumer, /^Consuming /)).toBeGreaterThanOrEqual(0)
    }))

  it.scopedLive("the broker stopped: 200 orders posted meanwhile are all accepted, and every one is notified once it is back", () =>
    Effect.gen(function*() {
      const queue = yield* faultQueue("stop-start")
      yield* brokerRestoredOnExit
      const orders = yield* startOrderService(queue, { PUBLISH_TIMEOUT_MS })
      const consumer = yield* startNotificationService(queue, { NOTIFICATION_PREFETCH: 20 })
      const before = yield* postOrders(orders.port, 20, 4)

      const stoppedAt = Date.now()
      yield* Effect.promise(() => rabbitmqctl("stop_app"))
      yield* waitForReadiness(consumer.port, 503)
      // The order service stays ready: it needs its store, not the broker, to accept an order.
      expect(yield* readiness(orders.port)).toBe(200)
      const during = yield* postOrders(orders.port, 200, 8)
      const latencies = during.map((a) => a.latencyMs)
      const waiting = yield* readinessBody(orders.port)

      yield* Effect.promise(() => rabbitmqctl("start_app"))
      const backAt = Date.now()
      yield* waitForReadiness(consumer.port, 200)
      const after = yield* postOrders(orders.port, 20, 4)
      const all = [...before, ...during, ...after]
      const account = yield* settleStoreAccount(orders.port, acceptedIds(all))
      const allNotifiedAt = Date.now()
      yield* report("stop_app/start_app (orders posted while the broker is down)", {
        orders: all.length,
        ...account,
        lost: account.lost.length,
        acceptedWhileDown: during.filter((a) => a.status === 201).length,
        outboxWhileDown: waiting.outbox,
        acceptLatencyP50Ms: percentile(latencies, 50),
        acceptLatencyP99Ms: percentile(latencies, 99),
        outageMs: backAt - stoppedAt,
        allNotifiedAfterReturnMs: allNotifiedAt - backAt
      })
      expect(all.filter((a) => a.status !== 201)).toEqual([])
      expect(waiting).toMatchObject({ store: "up", broker: "down" })
      expect(waiting.outbox.pending).toBeGreaterThanOrEqual(200)
      expect(account.lost).toEqual([])
      expect(account.notified).toBe(240)
      expect([orders.child.exitCode, consumer.child.exitCode]).toEqual([null, null])
    }))
})
