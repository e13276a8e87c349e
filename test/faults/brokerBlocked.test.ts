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
  readinessBody,
  report,
  settleStoreAccount,
  startNotificationService,
  startOrderService,
  unblockPublishing,
  until
} from "../support/faultRig"

const CONCURRENCY = 4

describe("a broker that blocks publishing (memory alarm)", () => {
  it.scopedLive("accepts orders while blocked, keeps their commands in the outbox, and relays them all when the alarm clears", () =>
    Effect.gen(function*() {
      const queue = yield* faultQueue("blocked")
      yield* brokerRestoredOnExit
      const orders = yield* startOrderService(queue)
      yield* startNotificationService(queue)
      const before = yield* postOrders(orders.port, 20, CONCURRENCY)

      yield* blockPublishing
      const during = yield* postOrders(orders.port, 100, CONCURRENCY)
      const latencies = during.map((a) => a.latencyMs)
      const waiting = yield* until(readinessBody(orders.port), (body) => body.outbox.pending >= 100, { what: "the outbox to hold them" })
        .pipe(Effect.zipRight(readinessBody(orders.port)))

      yield* unblockPublishing
      const clearedAt = Date.now()
      const account = yield* settleStoreAccount(orders.port, acceptedIds([...before, ...during]))
      yield* report("memory alarm (blocked connection)", {
        ...account,
        lost: account.lost.length,
        acceptedWhileBlocked: during.filter((a) => a.status === 201).length,
        outboxWhileBlocked: waiting.outbox.pending,
        acceptLatencyP50Ms: percentile(latencies, 50),
        acceptLatencyMaxMs: Math.max(...latencies),
        allNotifiedAfterClearMs: Date.now() - clearedAt
      })
      expect([...before, ...during].filter((a) => a.status !== 201)).toEqual([])
      // Accepting does not wait for the broker: no order waited for a publish timeout.
      expect(percentile(latencies, 50)).toBeLessThan(100)
      expect(account.lost).toEqual([])
      expect(account.notified).toBe(120)
    }))

  it.scopedLive("an order service SIGKILLed with 500 commands in its outbox relays every one after its restart", () =>
    Effect.gen(function*() {
      const queue = yield* faultQueue("killed-order-service")
      yield* brokerRestoredOnExit
      const first = yield* startOrderService(queue)
      yield* startNotificationService(queue, { NOTIFICATION_PREFETCH: 50 })
      // Blocked, the relay cannot publish: the burst's commands are all still in the outbox at the kill.
      yield* blockPublishing
      const burst = yield* postOrders(first.port, 500, 16)
      expect(burst.filter((a) => a.status !== 201)).toEqual([])
      const pendingAtKill = (yield* readinessBody(first.port)).outbox.pending
      yield* killAndDrain(first, "SIGKILL")
      yield* unblockPublishing

      const restarted = yield* startOrderService(queue)
      const restartedAt = Date.now()
      const account = yield* settleStoreAccount(restarted.port, acceptedIds(burst))
      yield* report("order service SIGKILLed with a full outbox, then restarted", {
        ...account,
        lost: account.lost.length,
        pendingAtKill,
        allNotifiedAfterRestartMs: Date.now() - restartedAt
      })
      expect(pendingAtKill).toBeGreaterThan(0)
      expect(account.lost).toEqual([])
      expect(account.notified).toBe(500)
    }), 240_000)
})
