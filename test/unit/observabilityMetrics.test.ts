import { HttpClient, HttpClientRequest } from "@effect/platform"
import { NodeHttpClient } from "@effect/platform-node"
import { describe, expect, it } from "@effect/vitest"
import type * as amqp from "amqplib"
import { Effect, Layer, Metric, MetricLabel } from "effect"
import { encodeCommand, SendNotificationCommand } from "../../src/contracts/SendNotificationCommand"
import { makeOrderId, UserId } from "../../src/domain/Order"
import { CommandConsumer, processDelivery } from "../../src/notification/CommandConsumer"
import { EventPublisher } from "../../src/notification/EventPublisher"
import { HttpLive as NotificationHttpLive } from "../../src/notification/Http"
import {
  commandsDeadLettered,
  commandsFailed,
  commandsProcessed,
  commandsRedelivered,
  commandsReplayed,
  countEventPublished,
  observeDelivery,
  processingDuration,
  retries
} from "../../src/notification/NotificationMetrics"
import { NotificationFailed, NotificationSender } from "../../src/notification/NotificationSender"
import { PROMETHEUS_CONTENT_TYPE } from "../../src/observability/Metrics"
import { metricTypes, sampleValue } from "../support/observability"
import { failingOrderStore, orderApi, relayDouble, withEnv } from "../support/orderDoubles"
import { freePort } from "../support/processes"

const scrape = Effect.gen(function*() {
  const response = yield* HttpClient.get("/metrics")
  expect(response.status).toBe(200)
  expect(response.headers["content-type"]).toBe(PROMETHEUS_CONTENT_TYPE)
  return yield* response.text
})

const post = (userId: number, idempotencyKey?: string) =>
  HttpClientRequest.post("/orders").pipe(
    HttpClientRequest.setHeaders(idempotencyKey === undefined ? {} : { "idempotency-key": idempotencyKey }),
    HttpClientRequest.bodyText(JSON.stringify({ userId }), "application/json"),
    HttpClient.execute
  )

const orderSamples = (text: string) => ({
  accepted: sampleValue(text, "orders_accepted_total"),
  replayed: sampleValue(text, "orders_replayed_total"),
  refusedByStore: sampleValue(text, "orders_refused_total", { reason: "store" }),
  refusedOutboxFull: sampleValue(text, "orders_refused_total", { reason: "outbox_full" })
})

describe("GET /metrics on the order service", () => {
  it.scoped("serves Prometheus text: the order metrics with their types, the service in target_info, nothing else", () =>
    Effect.gen(function*() {
      const text = yield* scrape
      expect(text).toContain("target_info{service_name=\"order-service\"")
      expect(metricTypes(text)).toEqual({
        target_info: "gauge",
        orders_accepted_total: "counter",
        orders_replayed_total: "counter",
        orders_refused_total: "counter",
        order_outbox_pending: "gauge",
        order_outbox_oldest_seconds: "gauge",
        order_relay_published_total: "counter",
        order_relay_failed_total: "counter",
        order_outbox_lag_seconds: "histogram",
        order_status_transitions_total: "counter",
        order_events_consumed_total: "counter"
      })
      // Every series is there before the first order, so dashboards and alerts see 0, not nothing.
      const series: ReadonlyArray<[string, Record<string, string>]> = [
        ["orders_accepted_total", {}],
        ["orders_replayed_total", {}],
        ["orders_refused_total", { reason: "store" }],
        ["orders_refused_total", { reason: "outbox_full" }],
        ["order_outbox_pending", {}],
        ["order_outbox_oldest_seconds", {}],
        ["order_relay_published_total", {}],
        ["order_relay_failed_total", {}],
        ["order_outbox_lag_seconds_bucket", { le: "+Inf" }],
        ["order_status_transitions_total", { to: "queued" }],
        ["order_status_transitions_total", { to: "notified" }],
        ["order_status_transitions_total", { to: "failed" }],
        ["order_events_consumed_total", { outcome: "applied" }],
        ["order_events_consumed_total", { outcome: "duplicate" }],
        ["order_events_consumed_total", { outcome: "unknown_order" }],
        ["order_events_consumed_total", { outcome: "invalid" }]
      ]
      for (const [name, labels] of series) {
        expect(sampleValue(text, name, labels), `${name} ${JSON.stringify(labels)}`).toBeTypeOf("number")
      }
    }).pipe(Effect.provide(orderApi())))

  it.scoped("counts orders accepted once, and their replays apart; a refused request counts as neither", () =>
    Effect.gen(function*() {
      const before = orderSamples(yield* scrape)
      expect((yield* post(42)).status).toBe(201)
      expect((yield* post(43, "metrics-key")).status).toBe(201)
      expect((yield* post(43, "metrics-key")).status).toBe(201)
      // Refused by validation, or by the store for a reused key: nothing was stored, nothing is counted.
      expect((yield* post(-1)).status).toBe(400)
      expect((yield* post(44, "metrics-key")).status).toBe(422)
      const after = orderSamples(yield* scrape)
      expect(after.accepted! - before.accepted!).toBe(2)
      expect(after.replayed! - before.replayed!).toBe(1)
      expect(after.refusedByStore).toBe(before.refusedByStore)
      expect(after.refusedOutboxFull).toBe(before.refusedOutboxFull)
    }).pipe(Effect.provide(orderApi())))

  it.scoped("counts an order refused for the store when the store fails", () =>
    Effect.gen(function*() {
      const before = orderSamples(yield* scrape)
      expect((yield* post(42)).status).toBe(503)
      const after = orderSamples(yield* scrape)
      expect(after.refusedByStore! - before.refusedByStore!).toBe(1)
      expect(after.refusedOutboxFull).toBe(before.refusedOutboxFull)
      expect(after.accepted).toBe(before.accepted)
    }).pipe(Effect.provide(orderApi({ store: failingOrderStore() }))))

  it.scoped("counts an order refused for outbox_full when OUTBOX_MAX_PENDING commands wait", () =>
    Effect.gen(function*() {
      const before = orderSamples(yield* scrape)
      expect((yield* post(42)).status).toBe(503)
      const after = orderSamples(yield* scrape)
      expect(after.refusedOutboxFull! - before.refusedOutboxFull!).toBe(1)
      expect(after.refusedByStore).toBe(before.refusedByStore)
      expect(after.accepted).toBe(before.accepted)
    }).pipe(Effect.provide(orderApi({ relay: relayDouble({ pending: 5 }), env: { OUTBOX_MAX_PENDING: "5" } }))))
})

/** The notification service's own health and metrics server on `port`, its consumer a double. */
const notificationServiceOn = (port: number) =>
  NotificationHttpLive.pipe(
    Layer.provide(Layer.succeed(CommandConsumer, CommandConsumer.of({ isReady: Effect.succeed(true) }))),
    Layer.provide(withEnv({ NOTIFICATION_HEALTH_PORT: String(port) }))
  )

const clientOf = (port: number) =>
  Layer.effect(
    HttpClient.HttpClient,
    Effect.map(HttpClient.HttpClient, HttpClient.mapRequest(HttpClientRequest.prependUrl(`http://127.0.0.1:${port}`)))
  ).pipe(Layer.provide(NodeHttpClient.layer))

const notificationService = Layer.unwrapEffect(
  Effect.map(freePort, (port) => Layer.merge(notificationServiceOn(port), clientOf(port)))
)

describe("GET /metrics on the notification service", () => {
  it.scoped("serves the notification metrics with their types, the service in target_info, nothing of the order service's", () =>
    Effect.gen(function*() {
      const text = yield* scrape
      expect(text).toContain("target_info{service_name=\"notification-service\"")
      expect(metricTypes(text)).toEqual({
        target_info: "gauge",
        notification_commands_processed_total: "counter",
        notification_commands_failed_total: "counter",
        notification_commands_redelivered_total: "counter",
        notification_commands_dead_lettered_total: "counter",
        notification_commands_replayed_total: "counter",
        notification_retries_total: "counter",
        notification_command_processing_seconds: "histogram",
        notification_events_published_total: "counter"
      })
      for (const type of ["NotificationSent", "NotificationFailed"]) {
        expect(sampleValue(text, "notification_events_published_total", { type })).toBeTypeOf("number")
      }
      for (const reason of ["invalid", "max_attempts"]) {
        expect(sampleValue(text, "notification_commands_dead_lettered_total", { reason })).toBeTypeOf("number")
      }
      expect(sampleValue(text, "notification_retries_total", { delay: "immediate" })).toBeTypeOf("number")
    }).pipe(Effect.provide(notificationService)))

  it.scoped("counts each confirmed event by its type", () =>
    Effect.gen(function*() {
      const published = (text: string) => ({
        sent: sampleValue(text, "notification_events_published_total", { type: "NotificationSent" })!,
        failed: sampleValue(text, "notification_events_published_total", { type: "NotificationFailed" })!
      })
      const before = published(yield* scrape)
      countEventPublished("NotificationFailed")
      countEventPublished("NotificationSent")
      countEventPublished("NotificationSent")
      const after = published(yield* scrape)
      expect({ sent: after.sent - before.sent, failed: after.failed - before.failed }).toEqual({ sent: 2, failed: 1 })
    }).pipe(Effect.provide(notificationService)))
})

const command = new SendNotificationCommand({ orderId: makeOrderId(), userId: UserId.make(7) })

const delivery = (
  content: Buffer,
  options: { redelivered?: boolean; deliveryCount?: number; headers?: Record<string, unknown> } = {}
) =>
  ({
    content,
    fields: { deliveryTag: 1, redelivered: options.redelivered ?? false },
    properties: {
      headers: { "x-delivery-count": options.deliveryCount ?? 0, ...options.headers },
      messageId: command.orderId
    }
  }) as unknown as amqp.Message

const senderThat = (outcome: "succeeds" | "fails") =>
  Layer.succeed(
    NotificationSender,
    NotificationSender.make({
      send: (c) => outcome === "succeeds" ? Effect.void : Effect.fail(new NotificationFailed({ orderId: c.orderId, reason: "no" }))
    })
  )

/** Events are confirmed at once. */
const events = Layer.succeed(EventPublisher, EventPublisher.of({ publish: () => Effect.void, isReady: Effect.succeed(true) }))

const label = (key: string, value: string) => [MetricLabel.make(key, value)]

const notificationCounts = Effect.all({
  processed: Metric.value(commandsProcessed),
  failed: Metric.value(commandsFailed),
  redelivered: Metric.value(commandsRedelivered),
  invalid: Metric.value(Metric.taggedWithLabels(commandsDeadLettered, label("reason", "invalid"))),
  exhausted: Metric.value(Metric.taggedWithLabels(commandsDeadLettered, label("reason", "max_attempts"))),
  timedAcks: Metric.value(Metric.taggedWithLabels(processingDuration, label("outcome", "ack"))),
  retriedNow: Metric.value(Metric.taggedWithLabels(retries, label("delay", "immediate"))),
  retriedAfter200ms: Metric.value(Metric.taggedWithLabels(retries, label("delay", "200ms"))),
  replayed: Metric.value(commandsReplayed)
}).pipe(Effect.map((counts) => ({
  processed: counts.processed.count,
  failed: counts.failed.count,
  redelivered: counts.redelivered.count,
  invalid: counts.invalid.count,
  exhausted: counts.exhausted.count,
  timedAcks: counts.timedAcks.count,
  retriedNow: counts.retriedNow.count,
  retriedAfter200ms: counts.retriedAfter200ms.count,
  replayed: counts.replayed.count
})))

/** Runs one delivery as the consumer does and returns how the counters moved. */
const deltaAfter = (message: amqp.Message, outcome: "succeeds" | "fails", firstDelayMillis = 0) =>
  Effect.gen(function*() {
    const before = yield* notificationCounts
    yield* processDelivery(message, { maxAttempts: 3, firstDelayMillis, maxDelayMillis: 60_000 }).pipe(
      observeDelivery(message),
      Effect.provide(Layer.merge(senderThat(outcome), events))
    )
    const after = yield* notificationCounts
    return Object.fromEntries(Object.entries(after).map(([key, value]) => [key, value - before[key as keyof typeof before]]))
  })

describe("notification metrics", () => {
  it.effect("a sent command is processed, and its processing timed", () =>
    Effect.gen(function*() {
      expect(yield* deltaAfter(delivery(encodeCommand(command)), "succeeds")).toMatchObject({
        processed: 1,
        failed: 0,
        redelivered: 0,
        invalid: 0,
        exhausted: 0,
        timedAcks: 1
      })
    }))

  it.effect("a failed send that will be retried is failed; its redelivery is redelivered", () =>
    Effect.gen(function*() {
      expect(yield* deltaAfter(delivery(encodeCommand(command)), "fails")).toMatchObject({ failed: 1, processed: 0 })
      expect(yield* deltaAfter(delivery(encodeCommand(command), { redelivered: true, deliveryCount: 1 }), "succeeds"))
        .toMatchObject({ redelivered: 1, processed: 1, failed: 0 })
    }))

  it.effect("the last failed attempt is failed and dead-lettered for max_attempts; poison is dead-lettered as invalid", () =>
    Effect.gen(function*() {
      expect(yield* deltaAfter(delivery(encodeCommand(command), { redelivered: true, deliveryCount: 2 }), "fails"))
        .toMatchObject({ processed: 0, failed: 1, redelivered: 1, invalid: 0, exhausted: 1, timedAcks: 0 })
      expect(yield* deltaAfter(delivery(Buffer.from("not json")), "succeeds"))
        .toMatchObject({ processed: 0, failed: 0, redelivered: 0, invalid: 1, exhausted: 0, timedAcks: 0 })
    }))

  it.effect("retries are counted by their delay: immediate, or the delay queue's", () =>
    Effect.gen(function*() {
      expect(yield* deltaAfter(delivery(encodeCommand(command)), "fails", 200))
        .toMatchObject({ failed: 1, retriedNow: 1, retriedAfter200ms: 0 })
      expect(yield* deltaAfter(delivery(encodeCommand(command), { redelivered: true, deliveryCount: 1 }), "fails", 200))
        .toMatchObject({ failed: 1, retriedNow: 0, retriedAfter200ms: 1 })
    }))

  it.effect("a replayed command is counted on its first delivery only", () =>
    Effect.gen(function*() {
      const replayed = { "x-replayed-at": "2026-12-02T10:00:00.000Z" }
      expect(yield* deltaAfter(delivery(encodeCommand(command), { headers: replayed }), "succeeds")).toMatchObject({ replayed: 1 })
      expect(yield* deltaAfter(delivery(encodeCommand(command), { headers: { ...replayed, "x-attempts": 2 } }), "succeeds"))
        .toMatchObject({ replayed: 0 })
    }))
})
