import { HttpClient, HttpClientRequest } from "@effect/platform"
import { describe, expect, it } from "@effect/vitest"
import { Effect, Layer, Schedule } from "effect"
import { HttpLive as NotificationHttpLive } from "../../src/notification/Http"
import { NotificationFailed, NotificationSender } from "../../src/notification/NotificationSender"
import { eventually, testBroker, testConfig, uniqueQueueName } from "../support/broker"
import { sampleValue } from "../support/observability"
import { freePort } from "../support/processes"
import { notificationConsumer, orderService } from "../support/services"

/** Sends every notification, except user 13's, which always fail. */
const senderFailingFor13 = Layer.succeed(
  NotificationSender,
  NotificationSender.make({
    send: (command) =>
      command.userId === 13 ? Effect.fail(new NotificationFailed({ orderId: command.orderId, reason: "mailbox full" })) : Effect.void
  })
)

/** The notification service's HTTP side (health and metrics) over the real consumer. */
const notificationService = (env: Record<string, string | number>) =>
  NotificationHttpLive.pipe(
    Layer.provide(notificationConsumer(env, senderFailingFor13)),
    Layer.provide(testConfig(env))
  )

const text = (url: string) => Effect.promise(() => fetch(url).then((response) => response.text()))

const notificationSamples = (metrics: string) => ({
  processed: sampleValue(metrics, "notification_commands_processed_total") ?? NaN,
  failed: sampleValue(metrics, "notification_commands_failed_total") ?? NaN,
  redelivered: sampleValue(metrics, "notification_commands_redelivered_total") ?? NaN,
  deadLetteredInvalid: sampleValue(metrics, "notification_commands_dead_lettered_total", { reason: "invalid" }) ?? NaN,
  deadLetteredMaxAttempts: sampleValue(metrics, "notification_commands_dead_lettered_total", { reason: "max_attempts" }) ??
    NaN,
  timedAcks: sampleValue(metrics, "notification_command_processing_seconds_count", { outcome: "ack" }) ?? NaN,
  sentEvents: sampleValue(metrics, "notification_events_published_total", { type: "NotificationSent" }) ?? NaN,
  failedEvents: sampleValue(metrics, "notification_events_published_total", { type: "NotificationFailed" }) ?? NaN
})

const orderSamples = (metrics: string) => ({
  accepted: sampleValue(metrics, "orders_accepted_total") ?? NaN,
  refusedByStore: sampleValue(metrics, "orders_refused_total", { reason: "store" }) ?? NaN,
  relayed: sampleValue(metrics, "order_relay_published_total") ?? NaN,
  lagObserved: sampleValue(metrics, "order_outbox_lag_seconds_count") ?? NaN,
  queued: sampleValue(metrics, "order_status_transitions_total", { to: "queued" }) ?? NaN,
  notified: sampleValue(metrics, "order_status_transitions_total", { to: "notified" }) ?? NaN,
  failed: sampleValue(metrics, "order_status_transitions_total", { to: "failed" }) ?? NaN,
  eventsApplied: sampleValue(metrics, "order_events_consumed_total", { outcome: "applied" }) ?? NaN,
  pending: sampleValue(metrics, "order_outbox_pending") ?? NaN
})

const minus = <T extends Record<string, number>>(after: T, before: T) =>
  Object.fromEntries(Object.entries(after).map(([key, value]) => [key, value - before[key]!])) as T

const postOrder = (userId: number) =>
  HttpClientRequest.post("/orders").pipe(HttpClientRequest.bodyUnsafeJson({ userId }), HttpClient.execute)

describe("metrics move as orders flow through the real broker", () => {
  it.scopedLive("order and notification counters on both services' /metrics", () =>
    Effect.gen(function*() {
      const queue = uniqueQueueName("metrics")
      const { channel } = yield* testBroker(queue)
      const healthPort = yield* freePort
      const env = {
        COMMAND_QUEUE: queue,
        NOTIFICATION_HEALTH_PORT: healthPort,
        NOTIFICATION_MAX_ATTEMPTS: 2,
        NOTIFICATION_SEND_DELAY_MS: 0
      }
      const notificationMetrics = `http://127.0.0.1:${healthPort}/metrics`

      // Built on its own: two HttpApi servers built together would share one router.
      yield* Layer.build(notificationService(env))
      yield* Effect.gen(function*() {
        yield* eventually(
          () => fetch(`http://127.0.0.1:${healthPort}/health/ready`).then((r) => r.status, () => 0),
          (status) => status === 200,
          { what: "the notification service to be ready" }
        )
        yield* HttpClient.get("/health/ready").pipe(
          Effect.filterOrFail((response) => response.status === 200),
          Effect.retry(Schedule.spaced("20 millis").pipe(Schedule.upTo("15 seconds"))),
          Effect.orDie
        )
        const orderMetrics = Effect.flatMap(HttpClient.get("/metrics"), (response) => response.text)
        const context = yield* Effect.context<HttpClient.HttpClient>()

        const orderBefore = orderSamples(yield* orderMetrics)
        const notificationBefore = notificationSamples(yield* text(notificationMetrics))

        for (const userId of [1, 2, 13]) expect((yield* postOrder(userId)).status).toBe(201)
        // A poison message, published straight to the queue.
        channel.sendToQueue(queue, Buffer.from("{\"orderId\": 1"), { contentType: "application/json" })

        // Users 1 and 2: sent. User 13: fails, is redelivered, fails again and is dead-lettered.
        // The poison message: dead-lettered at once. Each of the three orders' fate comes back.
        const orderExpected = {
          accepted: 3,
          refusedByStore: 0,
          relayed: 3,
          lagObserved: 3,
          queued: 3,
          notified: 2,
          failed: 1,
          eventsApplied: 3,
          pending: 0
        }
        const orderMoved = yield* eventually(
          () => Effect.runPromise(Effect.map(orderMetrics.pipe(Effect.provide(context)), (m) => minus(orderSamples(m), orderBefore))),
          (delta) => JSON.stringify(delta) === JSON.stringify(orderExpected),
          { what: "the order counters to move" }
        )
        expect(orderMoved).toEqual(orderExpected)

        const expected = {
          processed: 2,
          failed: 2,
          redelivered: 1,
          deadLetteredInvalid: 1,
          deadLetteredMaxAttempts: 1,
          timedAcks: 2,
          sentEvents: 2,
          failedEvents: 1
        }
        const moved = yield* eventually(
          () => fetch(notificationMetrics).then((r) => r.text()).then((m) => minus(notificationSamples(m), notificationBefore)),
          (delta) => JSON.stringify(delta) === JSON.stringify(expected),
          { what: "the notification counters to move" }
        )
        expect(moved).toEqual(expected)
        // The dead-letter queue agrees (at-least-once dead-lettering may take a moment to land).
        yield* eventually(
          () => channel.checkQueue(`${queue}.dlq`).then((q) => q.messageCount),
          (count) => count === 2,
          { what: "both dead-lettered commands in the DLQ" }
        )

      }).pipe(Effect.provide(orderService(env)))
    }), 60_000)
})
