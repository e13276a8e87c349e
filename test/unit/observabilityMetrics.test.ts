import { HttpClient, HttpClientRequest } from "@effect/platform"
import { NodeHttpServer } from "@effect/platform-node"
import { describe, expect, it } from "@effect/vitest"
import type * as amqp from "amqplib"
import { Effect, Layer, Metric, MetricLabel } from "effect"
import { makeOrderId, UserId } from "../../src/domain/Order"
import { encodeCommand, SendNotificationCommand } from "../../src/messaging/SendNotificationCommand"
import { processDelivery } from "../../src/notification/CommandConsumer"
import { NotificationFailed, NotificationSender } from "../../src/notification/NotificationSender"
import {
  commandsDeadLettered,
  commandsFailed,
  commandsProcessed,
  commandsRedelivered,
  observeDelivery,
  processingDuration
} from "../../src/observability/Metrics"
import { CommandPublisher } from "../../src/order/CommandPublisher"
import { BrokerUnavailable } from "../../src/order/Errors"
import { HttpRoutes } from "../../src/order/Http"
import { Orders } from "../../src/order/Orders"
import { metricTypes, sampleValue } from "../support/observability"

/** The order API in memory with a publisher that confirms, or refuses, every command. */
const orderApi = (confirm: boolean) =>
  HttpRoutes.pipe(
    Layer.provide(Orders.Default),
    Layer.provide(Layer.succeed(
      CommandPublisher,
      CommandPublisher.of({
        publish: () => confirm ? Effect.void : Effect.fail(new BrokerUnavailable({ message: "Not connected to the broker" })),
        isReady: Effect.succeed(confirm)
      })
    )),
    Layer.provideMerge(NodeHttpServer.layerTest)
  )

const scrape = Effect.gen(function*() {
  const response = yield* HttpClient.get("/metrics")
  expect(response.status).toBe(200)
  expect(response.headers["content-type"]).toBe("text/plain; version=0.0.4; charset=utf-8")
  return yield* response.text
})

const post = (body: string) =>
  HttpClientRequest.post("/orders").pipe(HttpClientRequest.bodyText(body, "application/json"), HttpClient.execute)

const orderSamples = (text: string) => ({
  accepted: sampleValue(text, "orders_accepted_total"),
  refused: sampleValue(text, "orders_refused_total"),
  confirmedPublishes: sampleValue(text, "order_publish_duration_seconds_count", { outcome: "confirmed" }),
  refusedPublishes: sampleValue(text, "order_publish_duration_seconds_count", { outcome: "refused" })
})

describe("GET /metrics on the order service", () => {
  it.scoped("serves Prometheus text: the order metrics with their types, the service in target_info, nothing else", () =>
    Effect.gen(function*() {
      const text = yield* scrape
      expect(text).toContain("target_info{service_name=\"order-service\"")
      expect(metricTypes(text)).toEqual({
        target_info: "gauge",
        orders_accepted_total: "counter",
        orders_refused_total: "counter",
        order_publish_duration_seconds: "histogram"
      })
      // Every series is there before the first order, so dashboards and alerts see 0, not nothing.
      expect(sampleValue(text, "order_publish_duration_seconds_bucket", { outcome: "refused", le: "+Inf" })).toBeTypeOf(
        "number"
      )
    }).pipe(Effect.provide(orderApi(true))))

  it.scoped("counts an order accepted and times its publish when the broker confirms", () =>
    Effect.gen(function*() {
      const before = orderSamples(yield* scrape)
      expect((yield* post(JSON.stringify({ userId: 42 }))).status).toBe(201)
      expect((yield* post(JSON.stringify({ userId: 43 }))).status).toBe(201)
      // A request refused by validation never reaches the publisher: neither accepted nor refused.
      expect((yield* post(JSON.stringify({ userId: -1 }))).status).toBe(400)
      const after = orderSamples(yield* scrape)
      expect(after.accepted! - before.accepted!).toBe(2)
      expect(after.confirmedPublishes! - before.confirmedPublishes!).toBe(2)
      expect(after.refused).toBe(before.refused)
      expect(after.refusedPublishes).toBe(before.refusedPublishes)
    }).pipe(Effect.provide(orderApi(true))))

  it.scoped("counts an order refused when the broker does not confirm", () =>
    Effect.gen(function*() {
      const before = orderSamples(yield* scrape)
      expect((yield* post(JSON.stringify({ userId: 42 }))).status).toBe(503)
      const after = orderSamples(yield* scrape)
      expect(after.refused! - before.refused!).toBe(1)
      expect(after.refusedPublishes! - before.refusedPublishes!).toBe(1)
      expect(after.accepted).toBe(before.accepted)
    }).pipe(Effect.provide(orderApi(false))))
})

const command = new SendNotificationCommand({ orderId: makeOrderId(), userId: UserId.make(7) })

const delivery = (content: Buffer, options: { redelivered?: boolean; deliveryCount?: number } = {}) =>
  ({
    content,
    fields: { deliveryTag: 1, redelivered: options.redelivered ?? false },
    properties: { headers: { "x-delivery-count": options.deliveryCount ?? 0 }, messageId: command.orderId }
  }) as unknown as amqp.Message

const senderThat = (outcome: "succeeds" | "fails") =>
  Layer.succeed(
    NotificationSender,
    NotificationSender.make({
      send: (c) => outcome === "succeeds" ? Effect.void : Effect.fail(new NotificationFailed({ orderId: c.orderId, reason: "no" }))
    })
  )

const label = (key: string, value: string) => [MetricLabel.make(key, value)]

const notificationCounts = Effect.all({
  processed: Metric.value(commandsProcessed),
  failed: Metric.value(commandsFailed),
  redelivered: Metric.value(commandsRedelivered),
  invalid: Metric.value(Metric.taggedWithLabels(commandsDeadLettered, label("reason", "invalid"))),
  exhausted: Metric.value(Metric.taggedWithLabels(commandsDeadLettered, label("reason", "max_attempts"))),
  timedAcks: Metric.value(Metric.taggedWithLabels(processingDuration, label("outcome", "ack")))
}).pipe(Effect.map((counts) => ({
  processed: counts.processed.count,
  failed: counts.failed.count,
  redelivered: counts.redelivered.count,
  invalid: counts.invalid.count,
  exhausted: counts.exhausted.count,
  timedAcks: counts.timedAcks.count
})))

/** Runs one delivery as the consumer does and returns how the counters moved. */
const deltaAfter = (message: amqp.Message, outcome: "succeeds" | "fails", maxAttempts = 3) =>
  Effect.gen(function*() {
    const before = yield* notificationCounts
    yield* processDelivery(message, maxAttempts).pipe(observeDelivery(message), Effect.provide(senderThat(outcome)))
    const after = yield* notificationCounts
    return Object.fromEntries(Object.entries(after).map(([key, value]) => [key, value - before[key as keyof typeof before]]))
  })

describe("notification metrics", () => {
  it.effect("a sent command is processed, and its processing timed", () =>
    Effect.gen(function*() {
      expect(yield* deltaAfter(delivery(encodeCommand(command)), "succeeds")).toEqual({
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
      expect(yield* deltaAfter(delivery(encodeCommand(command), { redelivered: true, deliveryCount: 2 }), "fails", 3))
        .toEqual({ processed: 0, failed: 1, redelivered: 1, invalid: 0, exhausted: 1, timedAcks: 0 })
      expect(yield* deltaAfter(delivery(Buffer.from("not json")), "succeeds"))
        .toEqual({ processed: 0, failed: 0, redelivered: 0, invalid: 1, exhausted: 0, timedAcks: 0 })
    }))
})
