import { describe, expect, it } from "@effect/vitest"
import { Effect } from "effect"
import {
  acceptedIds,
  blockPublishing,
  brokerRestoredOnExit,
  faultQueue,
  killAndDrain,
  percentile,
  postOrders,
  readiness,
  readinessBody,
  report,
  settleStoreAccount,
  startNotificationService,
  startOrderService,
  unblockPublishing,
  waitForReadiness
} from "../support/faultRig"
import { privatePostgres } from "../support/privatePostgres"

describe("the order store fails under the order service (a PostgreSQL of the suite's own)", () => {
  it.scopedLive("answers 503 at once while the store is down, stores nothing then, and recovers when it is back", () =>
    Effect.gen(function*() {
      const postgres = yield* privatePostgres
      const queue = yield* faultQueue("store-down")
      const orders = yield* startOrderService(queue, { DATABASE_URL: postgres.url })
      yield* startNotificationService(queue)
      const before = yield* postOrders(orders.port, 20, 4)
      expect(before.filter((a) => a.status !== 201)).toEqual([])

      yield* postgres.stop
      const during = yield* postOrders(orders.port, 50, 4)
      const latencies = during.map((a) => a.latencyMs)
      yield* waitForReadiness(orders.port, 503)
      const downReport = yield* readinessBody(orders.port)

      yield* postgres.start
      const backAt = Date.now()
      yield* waitForReadiness(orders.port, 200)
      const readyAgainMs = Date.now() - backAt
      const after = yield* postOrders(orders.port, 20, 4)
      const account = yield* settleStoreAccount(orders.port, acceptedIds([...before, ...after]))
      // What the store holds for the user: the orders answered 201, and nothing of those answered 503.
      const listed = yield* Effect.promise(async () => {
        const ids: Array<string> = []
        let cursor: string | null = null
        do {
          const page: { orders: Array<{ orderId: string }>; next: string | null } = await fetch(`http://127.0.0.1:${orders.port}/orders?userId=42&limit=100${cursor === null ? "" : `&cursor=${cursor}`}`)
            .then((r) => r.json() as Promise<{ orders: Array<{ orderId: string }>; next: string | null }>)
          ids.push(...page.orders.map((o) => o.orderId))
          cursor = page.next
        } while (cursor !== null)
        return ids
      })
      yield* report("order store (PostgreSQL) stopped and started", {
        ...account,
        lost: account.lost.length,
        refusedWhileDown: during.filter((a) => a.status === 503).length,
        refusalP50Ms: percentile(latencies, 50),
        refusalMaxMs: Math.max(...latencies),
        readyAgainMs,
        stored: listed.length
      })
      expect(during.map((a) => a.status)).toEqual(Array(50).fill(503))
      expect(during.map((a) => a.error)).toEqual(Array(50).fill("StoreUnavailable"))
      expect(Math.max(...latencies)).toBeLessThan(6_000)
      expect(downReport).toMatchObject({ store: "down" })
      expect(after.filter((a) => a.status !== 201)).toEqual([])
      expect(account.lost).toEqual([])
      expect(account.notified).toBe(40)
      expect(listed.sort()).toEqual(acceptedIds([...before, ...after]).sort())
      expect(yield* readiness(orders.port)).toBe(200)
    }), 180_000)

  it.scopedLive("two replicas on one PostgreSQL: the commands a SIGKILLed replica left in the outbox are relayed by the other", () =>
    Effect.gen(function*() {
      const postgres = yield* privatePostgres
      const queue = yield* faultQueue("replicas")
      yield* brokerRestoredOnExit
      const [first, second] = [
        yield* startOrderService(queue, { DATABASE_URL: postgres.url }),
        yield* startOrderService(queue, { DATABASE_URL: postgres.url })
      ]
      yield* startNotificationService(queue, { NOTIFICATION_PREFETCH: 50 })
      // Blocked, no replica can publish: the burst's commands stay in the outbox, claimed by the first.
      yield* blockPublishing
      const burst = yield* postOrders(first.port, 200, 8)
      expect(burst.filter((a) => a.status !== 201)).toEqual([])
      yield* killAndDrain(first, "SIGKILL")
      const killedAt = Date.now()
      yield* unblockPublishing

      const account = yield* settleStoreAccount(second.port, acceptedIds(burst))
      const takenOverMs = Date.now() - killedAt
      yield* report("order-service replica SIGKILLed with its outbox full (PostgreSQL)", {
        ...account,
        lost: account.lost.length,
        allNotifiedAfterKillMs: takenOverMs
      })
      expect(account.lost).toEqual([])
      expect(account.notified).toBe(200)
      // The dead replica's lease (10 s) runs out, then the next poll of the other takes its rows.
      expect(takenOverMs).toBeLessThan(30_000)
    }), 180_000)
})
