import { describe, expect, it } from "@effect/vitest"
import { Context, Duration, Effect, Layer } from "effect"
import { retryQueueOf } from "../../src/messaging/DelayedRetry"
import { CommandConsumer } from "../../src/notification/CommandConsumer"
import { NotificationConfig } from "../../src/notification/NotificationConfig"
import { NotificationFailed, NotificationSender } from "../../src/notification/NotificationSender"
import {
  acceptedIds,
  commandsPending,
  consumerRecord,
  faultQueue,
  jsonLogRecorder,
  killAndDrain,
  loggedAt,
  loggedAtPerOrder,
  postOrder,
  postOrders,
  queueDepth,
  report,
  settleAccount,
  settleStoreAccount,
  startNotificationService,
  startOrderService,
  until
} from "../support/faultRig"
import { FAULT_AMQP_URL } from "../support/privateBroker"
import { notificationConsumer } from "../support/services"

const OUTAGE_MS = 10_000
const OUTAGE_ORDERS = 300

/**
 * The real sender (its log line, then NOTIFICATION_SEND_DELAY_MS of work) behind a provider that is
 * down until `outage.endsAt`: a send that finishes before then fails. `failures` counts them per order.
 */
const senderWithOutage = (outage: { endsAt: number }, failures: Map<string, number>) =>
  Layer.effect(
    NotificationSender,
    Effect.map(NotificationConfig, ({ sendDelay }) =>
      NotificationSender.make({
        send: (command) =>
          Effect.logInfo(`Sending notification for order ${command.orderId}`).pipe(
            Effect.zipRight(Effect.sleep(sendDelay)),
            Effect.zipRight(Effect.suspend(() => {
              if (Date.now() >= outage.endsAt) return Effect.void
              failures.set(command.orderId, (failures.get(command.orderId) ?? 0) + 1)
              return Effect.fail(new NotificationFailed({ orderId: command.orderId, reason: "provider down" }))
            }))
          )
      }))
  )

describe("retries that wait (delay queues)", () => {
  // With the literal defaults (prefetch 1, 500 ms sends, retries after 1 s, 2 s, 4 s, 5 attempts) one
  // consumer needs about 150 s for 300 sends after the outage, hence this test's own timeout.
  it.scopedLive("a sender that fails everything for 10 s, then recovers, 300 orders in that window: none dead-lettered, all notified", () =>
    Effect.gen(function*() {
      const queue = yield* faultQueue("outage")
      const orders = yield* startOrderService(queue)
      // The notification consumer in-process, so its sender can recover at a moment of the test's choosing.
      const outage = { endsAt: Number.POSITIVE_INFINITY }
      const failures = new Map<string, number>()
      const log = jsonLogRecorder()
      const context = yield* Layer.build(
        notificationConsumer({ AMQP_URL: FAULT_AMQP_URL, COMMAND_QUEUE: queue }, senderWithOutage(outage, failures)).pipe(
          Layer.provide(log.layer)
        )
      )
      yield* until(Context.get(context, CommandConsumer).isReady, (ready) => ready, { what: "the notification consumer to subscribe" })

      const outageStart = Date.now()
      outage.endsAt = outageStart + OUTAGE_MS
      // Spread evenly over the outage, short of its last half second (a busy event loop starts a request
      // late): one order every 32 ms, each at its own time from the start.
      const answers = yield* Effect.forEach(
        Array.from({ length: OUTAGE_ORDERS }, (_, i) => outageStart + (i * (OUTAGE_MS - 500)) / OUTAGE_ORDERS),
        (at) => Effect.zipRight(Effect.suspend(() => Effect.sleep(Duration.millis(Math.max(0, at - Date.now())))), postOrder(orders.port)),
        { concurrency: "unbounded" }
      )
      const accepted = acceptedIds(answers)
      expect(answers.filter((a) => a.status !== 201)).toEqual([])
      expect(Math.max(...answers.map((a) => a.startedAt))).toBeLessThan(outage.endsAt)

      const store = yield* settleStoreAccount(orders.port, accepted, { timeoutMs: 300_000 })
      const allNotifiedAt = Date.now()
      const account = yield* settleAccount(queue, accepted, [log])
      const failedSends = [...failures.values()].reduce((sum, n) => sum + n, 0)
      const retriedLater = loggedAt(log, /^Send failed, retrying in /).length
      yield* report("sender down for 10 s, 300 orders meanwhile, retry defaults", {
        ...store,
        lost: store.lost.length,
        deadLettered: account.deadLettered,
        duplicates: account.duplicates,
        maxSendAttempts: account.maxAttempts,
        failedSends,
        ordersThatFailed: failures.size,
        mostFailuresOfOneOrder: Math.max(0, ...failures.values()),
        retriedLater,
        lastAcceptedAfterOutageStartMs: Math.max(...answers.map((a) => a.finishedAt)) - outageStart,
        // How far the consumer had got when the sender came back: with prefetch 1 a backlog builds.
        sendsDuringOutage: loggedAt(log, /^Sending notification for order /).filter((t) => t < outage.endsAt).length,
        allNotifiedAfterRecoveryMs: allNotifiedAt - outage.endsAt,
        totalMs: allNotifiedAt - outageStart
      })
      // The outage was real: sends failed, and were retried rather than given up on.
      expect(failedSends).toBeGreaterThan(0)
      expect(store.lost).toEqual([])
      expect(store.failed).toBe(0)
      expect(store.notified).toBe(OUTAGE_ORDERS)
      expect(account.deadLettered).toBe(0)
      expect(account.deadLetters).toEqual([])
      expect(account.processed).toBe(OUTAGE_ORDERS)
      expect(account.duplicates).toBe(0)
      expect(store.duplicated).toBe(0)
    }), 360_000)

  it.scopedLive("the notification service SIGKILLed while 100 commands wait in a delay queue: all notified after a restart", () =>
    Effect.gen(function*() {
      const queue = yield* faultQueue("killed-while-waiting")
      const orders = yield* startOrderService(queue)
      // Every send fails, fast and 100 at a time: each command spends its immediate retry at once and
      // then waits 10 s in `.retry.10000ms`, long enough to see all 100 waiting there together.
      const retryDelayMs = 10_000
      const env = {
        NOTIFICATION_RETRY_DELAY_MS: retryDelayMs,
        NOTIFICATION_SEND_DELAY_MS: 10,
        NOTIFICATION_PREFETCH: 100
      }
      const delayQueue = retryQueueOf(queue, retryDelayMs)
      const first = yield* startNotificationService(queue, { ...env, NOTIFICATION_FAILURE_RATE: 1 })

      const answers = yield* postOrders(orders.port, 100, 10)
      const accepted = acceptedIds(answers)
      expect(answers.filter((a) => a.status !== 201)).toEqual([])
      const waitedForAllMs = yield* until(queueDepth(delayQueue), (n) => n >= 100, {
        timeoutMs: retryDelayMs,
        what: `all 100 commands waiting in ${delayQueue}`
      })
      // Nothing else anywhere: the command queue is empty, nothing is held by the consumer.
      const pendingAtKill = yield* commandsPending(queue)
      yield* killAndDrain(first, "SIGKILL")
      const killedAt = Date.now()
      const movedAt = loggedAtPerOrder(first, /^Send failed, retrying in /)

      const second = yield* startNotificationService(queue, { ...env, NOTIFICATION_FAILURE_RATE: 0 })
      const store = yield* settleStoreAccount(orders.port, accepted, { timeoutMs: 60_000 })
      const allNotifiedAt = Date.now()
      const account = yield* settleAccount(queue, accepted, [first, second])
      const sentAgainAt = loggedAtPerOrder(second, /^Sending notification for order /)
      // How long each command waited between its move to the delay queue and its next send.
      const waits = accepted.map((id) => (sentAgainAt.get(id)?.[0] ?? Number.NaN) - (movedAt.get(id)?.[0] ?? Number.NaN))
      yield* report("notification service SIGKILLed with 100 commands in a delay queue, then restarted", {
        ...store,
        lost: store.lost.length,
        deadLettered: account.deadLettered,
        sentTwice: account.duplicates,
        sentTwiceByTheStore: store.duplicated,
        inDelayQueueAfterMs: waitedForAllMs,
        pendingAtKill,
        shortestWaitMs: Math.min(...waits),
        longestWaitMs: Math.max(...waits),
        allNotifiedAfterKillMs: allNotifiedAt - killedAt
      })
      expect(pendingAtKill).toBe(100)
      // The killed service sent each twice (the first attempt and its immediate retry), all failed, and
      // moved each to the delay queue once.
      expect([...consumerRecord([first]).attempts.values()]).toEqual(Array(100).fill(2))
      expect(consumerRecord([first]).acked.size).toBe(0)
      expect([...movedAt.values()].map((times) => times.length)).toEqual(Array(100).fill(1))
      expect(store.lost).toEqual([])
      expect(store.notified).toBe(100)
      expect(store.failed).toBe(0)
      expect(account.deadLettered).toBe(0)
      expect(account.processed).toBe(100)
      // Nothing was in flight at the kill, so nothing is sent twice.
      expect(account.duplicates).toBe(0)
      expect(store.duplicated).toBe(0)
      // The restarted service sent each once more, not before its wait was over.
      expect([...consumerRecord([second]).attempts.values()]).toEqual(Array(100).fill(1))
      // (Measured from the move's log line, which follows the move by the broker's confirm.)
      expect(Math.min(...waits)).toBeGreaterThanOrEqual(retryDelayMs - 100)
    }), 120_000)
})
