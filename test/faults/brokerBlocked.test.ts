import { describe, expect, it } from "@effect/vitest"
import { Effect } from "effect"
import {
  acceptedIds,
  alarmInEffect,
  brokerRestoredOnExit,
  faultQueue,
  percentile,
  postOrders,
  report,
  settleAccount,
  startNotificationService,
  startOrderService,
  until
} from "../support/faultRig"
import { rabbitmqctl } from "../support/privateBroker"

const PUBLISH_TIMEOUT_MS = 2_000
const HTTP_SLACK_MS = 250
const CONCURRENCY = 4

describe("a broker that blocks publishing (memory alarm)", () => {
  it.scopedLive("refuses orders quickly while blocked instead of piling them up, and accepts again when the alarm clears", () =>
    Effect.gen(function*() {
      const queue = yield* faultQueue("blocked")
      yield* brokerRestoredOnExit
      const orders = yield* startOrderService(queue, { PUBLISH_TIMEOUT_MS })
      const consumer = yield* startNotificationService(queue)
      const before = yield* postOrders(orders.port, 20, CONCURRENCY)
      expect(before.filter((a) => a.status !== 201)).toEqual([])

      // A memory high watermark no node can stay under raises the alarm at once.
      yield* Effect.promise(() => rabbitmqctl("set_vm_memory_high_watermark", "0.000001"))
      yield* until(alarmInEffect, (alarm) => alarm, { what: "the memory alarm" })
      const during = yield* postOrders(orders.port, 100, CONCURRENCY)
      const latencies = during.map((a) => a.latencyMs)

      yield* Effect.promise(() => rabbitmqctl("set_vm_memory_high_watermark", "0.4"))
      yield* until(alarmInEffect, (alarm) => !alarm, { what: "the memory alarm to clear" })
      const clearedAt = Date.now()
      // Acceptance resumes once the broker unblocks the connection.
      yield* until(
        postOrders(orders.port, 1, 1),
        ([answer]) => answer!.status === 201,
        { what: "an order accepted after the alarm cleared", timeoutMs: 10_000 }
      )
      const acceptingAgainMs = Date.now() - clearedAt
      const after = yield* postOrders(orders.port, 20, CONCURRENCY)
      expect(after.filter((a) => a.status !== 201)).toEqual([])

      const account = yield* settleAccount(queue, acceptedIds([...before, ...after]), [consumer])
      yield* report("memory alarm (blocked connection)", {
        ...account,
        lost: account.lost.length,
        refused: during.length,
        refusalP50Ms: percentile(latencies, 50),
        refusalMaxMs: Math.max(...latencies),
        waitedForTimeout: during.filter((a) => a.latencyMs >= 1_000).length,
        acceptingAgainMs
      })
      // Nothing accepted while blocked, and every refusal a 503 within the publish timeout.
      expect(during.filter((a) => a.status !== 503)).toEqual([])
      expect(during.filter((a) => a.latencyMs > PUBLISH_TIMEOUT_MS + HTTP_SLACK_MS)).toEqual([])
      // Only the publishes already in flight when the broker blocked us wait for their timeout;
      // once amqplib reports the block, the rest are refused at once.
      expect(during.filter((a) => a.latencyMs >= 1_000).length).toBeLessThanOrEqual(CONCURRENCY)
      expect(percentile(latencies, 50)).toBeLessThan(100)
      expect(account.lost).toEqual([])
    }))
})
