import { HttpClient, HttpClientRequest } from "@effect/platform"
import { describe, expect, it } from "@effect/vitest"
import type * as amqp from "amqplib"
import { Deferred, Effect, Layer, Logger, Option, Schedule, SubscriptionRef } from "effect"
import { execFile } from "node:child_process"
import { commandProperties, encodeCommand, SendNotificationCommand } from "../../src/contracts/SendNotificationCommand"
import { makeOrderId, UserId } from "../../src/domain/Order"
import { AmqpConnection } from "../../src/messaging/AmqpConnection"
import { retryQueueOf } from "../../src/messaging/DelayedRetry"
import { STORY_HEADERS } from "../../src/messaging/FailureStory"
import { CommandConsumer, CommandConsumerLive } from "../../src/notification/CommandConsumer"
import { EventPublisher } from "../../src/notification/EventPublisher"
import { NotificationFailed, NotificationSender } from "../../src/notification/NotificationSender"
import { eventually, nextMessage, queueDepth, testBroker, testConfig, uniqueQueueName } from "../support/broker"
import { notificationConsumer, orderService, orderUntil } from "../support/services"

type Json = Record<string, any>

const ISO_8601 = /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$/

/** What the failing sender double says; the consumer's reason is the error's message. */
const REASON = "SMTP said no"
const failureReason = (orderId: string) => new NotificationFailed({ orderId, reason: REASON }).message

// ---------------------------------------------------------------------------------------------
// Doubles and probes

/** A logger that keeps every line with the time the logger stamped on it, in place of the default one. */
const timedLogger = () => {
  const lines: Array<{ readonly message: string; readonly date: Date }> = []
  const layer = Logger.replace(
    Logger.defaultLogger,
    Logger.make(({ date, message }) =>
      lines.push({ date, message: (Array.isArray(message) ? message : [message]).map(String).join(" ") })
    )
  )
  /** When each send of `orderId` started, from the sender's contract line (§6), in order. */
  const sendStarts = (orderId: string) =>
    lines.filter(({ message }) => message === `Sending notification for order ${orderId}`).map(({ date }) => date.getTime())
  return { lines, layer, sendStarts }
}

type Outcome = "succeed" | "fail" | "hang"

/**
 * A sender double that logs the contract's line at the start of each send, as the real sender does,
 * then does what `script` says for that order's `attempt`th send (1 for the first). `hanging` is
 * done once a send hangs.
 */
const scriptedSender = (script: (orderId: string, attempt: number) => Outcome) =>
  Effect.gen(function*() {
    const sends = new Map<string, number>()
    const hanging = yield* Deferred.make<void>()
    const layer = Layer.succeed(
      NotificationSender,
      NotificationSender.make({
        send: (command) =>
          Effect.logInfo(`Sending notification for order ${command.orderId}`).pipe(
            Effect.zipRight(Effect.suspend(() => {
              const attempt = (sends.get(command.orderId) ?? 0) + 1
              sends.set(command.orderId, attempt)
              switch (script(command.orderId, attempt)) {
                case "succeed":
                  return Effect.void
                case "fail":
                  return Effect.fail(new NotificationFailed({ orderId: command.orderId, reason: REASON }))
                case "hang":
                  return Effect.zipRight(Deferred.succeed(hanging, undefined), Effect.never)
              }
            }))
          )
      })
    )
    return { layer, hanging, sendsOf: (orderId: string) => sends.get(orderId) ?? 0 }
  })

const post = (body: unknown) =>
  HttpClientRequest.post("/orders").pipe(
    HttpClientRequest.bodyUnsafeJson(body),
    HttpClient.execute,
    Effect.flatMap((response) => Effect.map(response.json, (json) => ({ response, body: json as Json })))
  )


const awaitSubscribed = CommandConsumer.pipe(
  Effect.flatMap((consumer) => consumer.isReady),
  Effect.filterOrFail((ready) => ready),
  Effect.retry(Schedule.spaced("20 millis").pipe(Schedule.upTo("15 seconds")))
)

/** The next message on `queue`, or a failure naming what did not come. */
const awaitMessage = (channel: amqp.Channel, queue: string, what: string) =>
  nextMessage(channel, queue).pipe(
    Effect.timeoutFail({ duration: "20 seconds", onTimeout: () => new Error(`Timed out waiting for ${what} on ${queue}`) })
  )

/** Messages in each queue, ready and unacknowledged, counted at once (each count is a `rabbitmqctl` run). */
const depths = (...queues: ReadonlyArray<string>) =>
  Effect.map(
    Effect.all(queues.map((name) => Effect.map(queueDepth(name), (depth) => [name, depth] as const)), { concurrency: "unbounded" }),
    Object.fromEntries<number>
  )

/** Every queue on the broker whose name starts with `prefix`. */
const queuesNamed = (prefix: string) =>
  Effect.promise(() =>
    new Promise<ReadonlyArray<string>>((resolve, reject) =>
      execFile("rabbitmqctl", ["list_queues", "--quiet", "--no-table-headers", "name"], (error, stdout) =>
        error ? reject(error) : resolve(stdout.split("\n").map((line) => line.trim()).filter((name) => name.startsWith(prefix))))
    )
  )

const newCommand = () => new SendNotificationCommand({ orderId: makeOrderId(), userId: UserId.make(42) })

/** The story a consumer writes on a command it moves, as if `attempts` had been made already. */
const storyOf = (queue: string, attempts: number) => {
  const failedAt = new Date().toISOString()
  return {
    [STORY_HEADERS.reason]: REASON,
    [STORY_HEADERS.attempts]: attempts,
    [STORY_HEADERS.firstFailedAt]: failedAt,
    [STORY_HEADERS.lastFailedAt]: failedAt,
    [STORY_HEADERS.originalQueue]: queue
  }
}

/** The dead-lettered command's story headers, checked against the contract (§5). */
const expectStory = (message: amqp.Message, expected: { readonly queue: string; readonly attempts: number; readonly reason: string }) => {
  const headers = message.properties.headers ?? {}
  expect(headers["x-failure-reason"]).toBe(expected.reason)
  expect(headers["x-attempts"]).toBe(expected.attempts)
  expect(headers["x-original-queue"]).toBe(expected.queue)
  expect(headers["x-first-failed-at"]).toMatch(ISO_8601)
  expect(headers["x-last-failed-at"]).toMatch(ISO_8601)
  const first = Date.parse(String(headers["x-first-failed-at"]))
  const last = Date.parse(String(headers["x-last-failed-at"]))
  expect(first).toBeLessThanOrEqual(last)
  expect(last).toBeGreaterThan(Date.now() - 60_000)
  // Moved by the consumer with its story, not dead-lettered by the broker.
  expect(headers["x-death"]).toBeUndefined()
  return { first, last }
}

/** The notification consumer as `notificationConsumer` builds it, with its broker connection visible to the test. */
const consumerWithConnection = (env: Record<string, string | number>, sender: Layer.Layer<NotificationSender>) =>
  CommandConsumerLive.pipe(
    Layer.provide([sender, EventPublisher.Live]),
    Layer.provideMerge(AmqpConnection.layer({ connectionName: "test-notification-service" })),
    Layer.provide(testConfig(env))
  )

/** Cuts the consumer's connection as a crash or a dead network would: the socket goes, with no AMQP close. */
const cutConnection = Effect.gen(function*() {
  const { state } = yield* AmqpConnection
  const model = Option.getOrThrowWith(yield* SubscriptionRef.get(state), () => new Error("the consumer is not connected"))
  const { stream } = (model as unknown as { readonly connection: { readonly stream?: { destroy(error: Error): void } } })
    .connection
  if (stream === undefined) return yield* Effect.dieMessage("amqplib's connection has no socket to cut")
  stream.destroy(new Error("connection cut by the test"))
})

// ---------------------------------------------------------------------------------------------

describe("delayed retries, against the real broker", () => {
  it.scopedLive("the first retry is immediate, later ones wait in the delay queues, doubling, until a send succeeds", () =>
    Effect.gen(function*() {
      const queue = uniqueQueueName("delayed")
      const env = { COMMAND_QUEUE: queue, NOTIFICATION_RETRY_DELAY_MS: 200 }
      yield* testBroker(queue, env)
      const logs = timedLogger()
      const sender = yield* scriptedSender((_, attempt) => (attempt <= 3 ? "fail" : "succeed"))
      const orderId = yield* Effect.gen(function*() {
        const { body, response } = yield* post({ userId: 42 })
        expect(response.status).toBe(201)
        const orderId: string = body.order.orderId
        const notified = yield* orderUntil(orderId, (order) => order.status === "notified")
        expect(notified).toMatchObject({ orderId, status: "notified", notifications: 1 })
        expect(notified.failure).toBeUndefined()

        const [first, second, third, fourth, ...more] = logs.sendStarts(orderId)
        expect(more).toEqual([])
        expect(fourth).toBeDefined()
        // Attempt 1 failed: an immediate requeue.
        expect(second! - first!).toBeLessThan(150)
        // Attempt 2 failed: 200 ms (jittered up to 250) in the delay queue; attempt 3: 400 (up to 500).
        expect(third! - second!).toBeGreaterThanOrEqual(200)
        expect(third! - second!).toBeLessThan(250 + 750)
        expect(fourth! - third!).toBeGreaterThanOrEqual(400)
        expect(fourth! - third!).toBeLessThan(500 + 750)

        // The successful attempt was acked, and no copy of the command waits anywhere.
        const delayQueues = [retryQueueOf(queue, 200), retryQueueOf(queue, 400)]
        expect(yield* depths(queue, ...delayQueues)).toEqual(Object.fromEntries([queue, ...delayQueues].map((name) => [name, 0])))
        return orderId
      }).pipe(Effect.provide(Layer.merge(
        orderService({ COMMAND_QUEUE: queue }),
        notificationConsumer(env, sender.layer).pipe(Layer.provide(logs.layer))
      )))
      // Counted once the consumer has stopped: no fifth attempt came in the meantime.
      expect(sender.sendsOf(orderId)).toBe(4)
      expect(logs.sendStarts(orderId)).toHaveLength(4)
    }), 30_000)

  it.scopedLive("after its last attempt the command is in the dead-letter queue with its story, and the order reads failed", () =>
    Effect.gen(function*() {
      const queue = uniqueQueueName("story")
      const env = { COMMAND_QUEUE: queue, NOTIFICATION_MAX_ATTEMPTS: 3, NOTIFICATION_RETRY_DELAY_MS: 50 }
      const { channel } = yield* testBroker(queue, env)
      const logs = timedLogger()
      const sender = yield* scriptedSender(() => "fail")
      const orderId = yield* Effect.gen(function*() {
        // The consumer has declared the dead-letter queue that the test reads.
        yield* awaitSubscribed
        const { body, response } = yield* post({ userId: 7 })
        expect(response.status).toBe(201)
        const orderId: string = body.order.orderId

        const deadLettered = yield* awaitMessage(channel, `${queue}.dlq`, "the dead-lettered command")
        // Body and properties kept.
        expect(JSON.parse(deadLettered.content.toString())).toEqual({ orderId, userId: 7 })
        expect(deadLettered.properties).toMatchObject({
          messageId: orderId,
          type: "SendNotificationCommand",
          contentType: "application/json",
          deliveryMode: 2,
          appId: "order-service"
        })
        expect(deadLettered.properties.timestamp).toEqual(expect.any(Number))
        const { first, last } = expectStory(deadLettered, { queue, attempts: 3, reason: failureReason(orderId) })
        // The story starts no later than the failure before the delayed retry, at least 50 ms before the last.
        expect(last - first).toBeGreaterThanOrEqual(50)

        const starts = logs.sendStarts(orderId)
        expect(starts).toHaveLength(3)
        expect(starts[2]! - starts[1]!).toBeGreaterThanOrEqual(50)

        const failed = yield* orderUntil(orderId, (order) => order.status === "failed")
        expect(failed).toMatchObject({ orderId, status: "failed", notifications: 0 })
        expect(failed.failure).toEqual({ reason: failureReason(orderId), attempts: 3, failedAt: expect.stringMatching(ISO_8601) })
        expect(Date.parse(failed.failure.failedAt)).toBeGreaterThanOrEqual(first)

        // One copy, taken by the test above; nothing left on the command queue or in the delay queue.
        expect(yield* depths(queue, `${queue}.dlq`, retryQueueOf(queue, 50)))
          .toEqual({ [queue]: 0, [`${queue}.dlq`]: 0, [retryQueueOf(queue, 50)]: 0 })
        return orderId
      }).pipe(Effect.provide(Layer.merge(
        orderService({ COMMAND_QUEUE: queue }),
        notificationConsumer(env, sender.layer).pipe(Layer.provide(logs.layer))
      )))
      expect(sender.sendsOf(orderId)).toBe(3)
    }), 30_000)

  it.scopedLive("a 30 ms retry is not held behind a 60 s one", () =>
    Effect.gen(function*() {
      const queue = uniqueQueueName("nohold")
      const env = {
        COMMAND_QUEUE: queue,
        NOTIFICATION_RETRY_DELAY_MS: 30,
        NOTIFICATION_RETRY_MAX_DELAY_MS: 60_000,
        NOTIFICATION_MAX_ATTEMPTS: 20
      }
      // Deletes both delay queues at the end, the 60 s command with them.
      const { channel } = yield* testBroker(queue, env)
      const logs = timedLogger()
      const slow = newCommand()
      const fast = newCommand()
      // The slow command fails every time; the fast one fails twice, then succeeds.
      const sender = yield* scriptedSender((orderId, attempt) => (orderId === fast.orderId && attempt >= 3 ? "succeed" : "fail"))
      const slowQueue = retryQueueOf(queue, 60_000)
      yield* Effect.gen(function*() {
        yield* awaitSubscribed

        // As if 12 attempts had been made: attempt 13 fails and waits 30 ms × 2^11, capped at 60 s.
        channel.sendToQueue(queue, encodeCommand(slow), { ...commandProperties(slow.orderId, "test"), headers: storyOf(queue, 12) })
        yield* eventually(() => Effect.runPromise(queueDepth(slowQueue)), (depth) => depth === 1, {
          what: "the slow command in its 60 s delay queue"
        })
        expect(sender.sendsOf(slow.orderId)).toBe(1)

        // A fresh command: attempt 1 requeued at once, attempt 2 waits 30 ms, attempt 3 succeeds.
        channel.sendToQueue(queue, encodeCommand(fast), commandProperties(fast.orderId, "test"))
        yield* eventually(() => Promise.resolve(sender.sendsOf(fast.orderId)), (sends) => sends === 3, {
          timeoutMs: 5000,
          what: "the fast command's third attempt"
        })
        const [, second, third] = logs.sendStarts(fast.orderId)
        expect(third! - second!).toBeGreaterThanOrEqual(30)
        expect(third! - second!).toBeLessThan(1000)
        // The fast command was acked; the slow one still waits, and was sent no more.
        expect(yield* depths(queue, retryQueueOf(queue, 30), slowQueue))
          .toEqual({ [queue]: 0, [retryQueueOf(queue, 30)]: 0, [slowQueue]: 1 })
        expect(sender.sendsOf(slow.orderId)).toBe(1)
      }).pipe(Effect.provide(notificationConsumer(env, sender.layer).pipe(Layer.provide(logs.layer))))
    }), 30_000)

  it.scopedLive("NOTIFICATION_RETRY_DELAY_MS=0: every retry an immediate requeue, no delay queue, dead-lettered with its story", () =>
    Effect.gen(function*() {
      const queue = uniqueQueueName("nodelay")
      const env = { COMMAND_QUEUE: queue, NOTIFICATION_RETRY_DELAY_MS: 0 }
      const { channel } = yield* testBroker(queue, env)
      const logs = timedLogger()
      const sender = yield* scriptedSender(() => "fail")
      const command = newCommand()
      yield* Effect.gen(function*() {
        yield* awaitSubscribed
        channel.sendToQueue(queue, encodeCommand(command), commandProperties(command.orderId, "test"))
        const deadLettered = yield* awaitMessage(channel, `${queue}.dlq`, "the dead-lettered command")
        expect(deadLettered.content.toString()).toBe(encodeCommand(command).toString())
        expect(deadLettered.properties.messageId).toBe(command.orderId)
        expectStory(deadLettered, { queue, attempts: 5, reason: failureReason(command.orderId) })

        const starts = logs.sendStarts(command.orderId)
        expect(starts).toHaveLength(5)
        for (let i = 1; i < starts.length; i++) expect(starts[i]! - starts[i - 1]!).toBeLessThan(150)
        // The first failure is the first attempt's, though requeues carry no headers: the consumer
        // that requeued it remembered when. It failed after the first send started, before the second.
        const firstFailedAt = new Date(String(deadLettered.properties.headers?.["x-first-failed-at"])).getTime()
        expect(firstFailedAt).toBeGreaterThanOrEqual(starts[0]!)
        expect(firstFailedAt).toBeLessThanOrEqual(starts[1]!)

        // The consumer is subscribed, so it has declared all it declares: its queues, and no delay queue.
        const declared = yield* queuesNamed(queue)
        expect(declared).toContain(queue)
        expect(declared.filter((name) => name.startsWith(`${queue}.retry.`))).toEqual([])
      }).pipe(Effect.provide(notificationConsumer(env, sender.layer).pipe(Layer.provide(logs.layer))))
      expect(sender.sendsOf(command.orderId)).toBe(5)
    }), 30_000)

  it.scopedLive("a delivery lost with its connection mid-send counts as an attempt", () =>
    Effect.gen(function*() {
      const queue = uniqueQueueName("crash")
      const env = { COMMAND_QUEUE: queue, NOTIFICATION_RETRY_DELAY_MS: 50 }
      const { channel } = yield* testBroker(queue, env)
      const logs = timedLogger()
      // Attempt 1 fails (requeued), 2 fails (waits 50 ms), 3 hangs until its connection is cut.
      const sender = yield* scriptedSender((_, send) => (send === 3 ? "hang" : "fail"))
      const command = newCommand()
      yield* Effect.gen(function*() {
        yield* awaitSubscribed
        channel.sendToQueue(queue, encodeCommand(command), commandProperties(command.orderId, "test"))
        yield* Deferred.await(sender.hanging).pipe(Effect.timeoutFail({
          duration: "15 seconds",
          onTimeout: () => new Error("the third send never started")
        }))
        yield* cutConnection
        // The broker puts the delivery back; on the new connection it is attempt 4, and attempt 5 is the last.
        const deadLettered = yield* awaitMessage(channel, `${queue}.dlq`, "the dead-lettered command")
        expect(deadLettered.properties.messageId).toBe(command.orderId)
        expectStory(deadLettered, { queue, attempts: 5, reason: failureReason(command.orderId) })
        // Attempt 4 waited 200 ms (the third delayed retry's), not the 100 ms an attempt 3 would.
        const starts = logs.sendStarts(command.orderId)
        expect(starts).toHaveLength(5)
        expect(starts[4]! - starts[3]!).toBeGreaterThanOrEqual(200)
        expect(logs.lines.some(({ message }) => /^Connection to .+ lost/.test(message))).toBe(true)
      }).pipe(Effect.provide(consumerWithConnection(env, sender.layer).pipe(Layer.provide(logs.layer))))
      expect(sender.sendsOf(command.orderId)).toBe(5)
      expect(yield* queueDepth(queue)).toBe(0)
    }), 30_000)
})
