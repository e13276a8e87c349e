import { describe, expect, it } from "@effect/vitest"
import { Effect } from "effect"
import {
  acceptedIds,
  consumerRecord,
  faultQueue,
  postOrders,
  report,
  settleAccount,
  startNotificationService,
  startOrderService
} from "../support/faultRig"

const ORDERS = 2_000
const MAX_ATTEMPTS = 5

describe("a flaky sender (NOTIFICATION_FAILURE_RATE=0.3)", () => {
  it.scopedLive("every order is processed or dead-lettered after its last attempt: none lost, none looping", () =>
    Effect.gen(function*() {
      const queue = yield* faultQueue("flaky")
      const orders = yield* startOrderService(queue)
      const consumer = yield* startNotificationService(queue, {
        NOTIFICATION_FAILURE_RATE: 0.3,
        NOTIFICATION_MAX_ATTEMPTS: MAX_ATTEMPTS,
        NOTIFICATION_PREFETCH: 50
      })

      const answers = yield* postOrders(orders.port, ORDERS, 20)
      expect(answers.filter((a) => a.status !== 201)).toEqual([])
      const account = yield* settleAccount(queue, acceptedIds(answers), [consumer], { timeoutMs: 120_000 })
      const { attempts } = consumerRecord([consumer])
      const retried = [...attempts.values()].filter((n) => n > 1).length

      const { deadLetteredIds, ...figures } = account
      const retriedLater = consumer.lines.filter((line) => line.includes("Send failed, retrying in")).length
      yield* report("flaky sender", { ...figures, lost: account.lost.length, retried, retriedLater, maxAttemptsAllowed: MAX_ATTEMPTS })
      expect(account.accepted).toBe(ORDERS)
      expect(account.lost).toEqual([])
      expect(account.processed + account.deadLettered).toBe(ORDERS)
      // About 30% fail at least once, so retries happened; none went past the limit.
      expect(retried).toBeGreaterThan(ORDERS * 0.2)
      // A second failure (about 9% of orders) and every later one waits in a delay queue: about 250.
      expect(retriedLater).toBeGreaterThan(ORDERS * 0.05)
      expect(account.maxAttempts).toBeLessThanOrEqual(MAX_ATTEMPTS)
      // Dead-lettered only after the last attempt failed, never acked as well.
      for (const id of deadLetteredIds) expect([id, attempts.get(id)]).toEqual([id, MAX_ATTEMPTS])
      // Moved there by the consumer with its story; its retries waited (the defaults: 1 s, 2 s, 4 s)
      // between the first failure recorded in it (the second attempt's) and the last.
      for (const { headers, orderId } of account.deadLetters) {
        expect({ orderId, attempts: headers["x-attempts"], queue: headers["x-original-queue"], reason: headers["x-failure-reason"] })
          .toEqual({ orderId, attempts: MAX_ATTEMPTS, queue, reason: expect.stringContaining("simulated failure") })
        const waited = Date.parse(String(headers["x-last-failed-at"])) - Date.parse(String(headers["x-first-failed-at"]))
        expect(waited).toBeGreaterThanOrEqual(1_000 + 2_000 + 4_000)
      }
      expect(deadLetteredIds.filter((id) => consumerRecord([consumer]).acked.has(id))).toEqual([])
      // Acked and dead-lettered are exclusive outcomes, and an order is acked once without faults.
      expect(account.duplicates).toBe(0)
    }))
})
