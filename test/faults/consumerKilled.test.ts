import { describe, expect, it } from "@effect/vitest"
import { Effect } from "effect"
import {
  acceptedIds,
  consumerRecord,
  killAndDrain,
  faultQueue,
  postOrders,
  report,
  settleAccount,
  startNotificationService,
  startOrderService,
  until
} from "../support/faultRig"

const ORDERS = 600
const PREFETCH = 10

describe("a consumer killed with SIGKILL in the middle of a backlog", () => {
  it.scopedLive("loses nothing: the broker redelivers what it held, at most the prefetch", () =>
    Effect.gen(function*() {
      const queue = yield* faultQueue("sigkill")
      const orders = yield* startOrderService(queue)
      // Slow enough sends that a backlog builds while the orders go in.
      const consumerEnv = { NOTIFICATION_PREFETCH: PREFETCH, NOTIFICATION_SEND_DELAY_MS: 50 }
      const first = yield* startNotificationService(queue, consumerEnv)

      const answers = yield* postOrders(orders.port, ORDERS, 20)
      const accepted = acceptedIds(answers)
      expect(answers.filter((a) => a.status !== 201)).toEqual([])

      // Kill it once it is well into the backlog, with deliveries in flight.
      yield* until(Effect.sync(() => consumerRecord([first]).acked.size), (n) => n >= ORDERS / 4, {
        what: "the first consumer to work through a quarter of the backlog"
      })
      yield* killAndDrain(first, "SIGKILL")
      const before = consumerRecord([first])
      expect(before.acked.size).toBeLessThan(ORDERS)

      const second = yield* startNotificationService(queue, consumerEnv)
      const account = yield* settleAccount(queue, accepted, [first, second])
      const after = consumerRecord([second])
      // Started by the killed consumer, never acked by it, sent again by the new one.
      const redelivered = [...before.attempts.keys()].filter((id) => !before.acked.has(id) && after.attempts.has(id))

      yield* report("consumer SIGKILL", { ...account, lost: account.lost.length, redelivered: redelivered.length, prefetch: PREFETCH })
      expect(account.lost).toEqual([])
      expect(account.processed).toBe(ORDERS)
      expect(account.deadLettered).toBe(0)
      expect(redelivered.length).toBeLessThanOrEqual(PREFETCH)
      expect(account.duplicates).toBeLessThanOrEqual(PREFETCH)
    }))
})
