import { describe, expect, it } from "@effect/vitest"
import { Deferred, Effect, Layer, Schedule } from "effect"
import { makeOrderId, UserId } from "../../src/domain/Order"
import { declareWorkQueue } from "../../src/messaging/QueueTopology"
import { commandProperties, encodeCommand, SendNotificationCommand } from "../../src/contracts/SendNotificationCommand"
import { CommandConsumer } from "../../src/notification/CommandConsumer"
import { NotificationFailed, NotificationSender } from "../../src/notification/NotificationSender"
import { eventually, nextMessage, queueDepth, testBroker, uniqueQueueName } from "../support/broker"
import { recordingLogger } from "../support/logs"
import { notificationConsumer } from "../support/services"

const newCommand = () => new SendNotificationCommand({ orderId: makeOrderId(), userId: UserId.make(42) })

/** A sender double that records each attempt and tells the test about it. */
const recordingSender = (outcome: "succeed" | "fail") =>
  Effect.gen(function*() {
    const attempts: Array<string> = []
    const attempted = yield* Deferred.make<void>()
    const layer = Layer.succeed(
      NotificationSender,
      NotificationSender.make({
        send: (command) =>
          Effect.suspend(() => {
            attempts.push(command.orderId)
            Deferred.unsafeDone(attempted, Effect.void)
            return outcome === "succeed"
              ? Effect.void
              : Effect.fail(new NotificationFailed({ orderId: command.orderId, reason: "simulated" }))
          })
      })
    )
    return { attempts, attempted, layer }
  })

const awaitSubscribed = CommandConsumer.pipe(
  Effect.flatMap((consumer) => consumer.isReady),
  Effect.filterOrFail((ready) => ready),
  Effect.retry(Schedule.spaced("20 millis").pipe(Schedule.upTo("15 seconds")))
)

describe("notification consumer against the real broker", () => {
  it.scopedLive("sends a command and acks it", () =>
    Effect.gen(function*() {
      const queue = uniqueQueueName("ack")
      const { channel } = yield* testBroker(queue)
      const sender = yield* recordingSender("succeed")
      const command = newCommand()
      yield* Effect.gen(function*() {
        yield* awaitSubscribed
        channel.sendToQueue(queue, encodeCommand(command), commandProperties(command.orderId, "test"))
        yield* Deferred.await(sender.attempted)
        // Ready plus unacknowledged: reaches 0 only once the consumer has acked.
        yield* eventually(() => Effect.runPromise(queueDepth(queue)), (depth) => depth === 0, { what: "the ack" })
      }).pipe(Effect.provide(notificationConsumer({ COMMAND_QUEUE: queue }, sender.layer)))
      expect(sender.attempts).toEqual([command.orderId])
      // Nothing came back after the consumer closed: the ack was real.
      expect(yield* queueDepth(queue)).toBe(0)
    }))

  it.scopedLive("dead-letters a poison message at once, never sending it, with a log line giving the reason", () =>
    Effect.gen(function*() {
      const queue = uniqueQueueName("poison")
      const { channel } = yield* testBroker(queue)
      const sender = yield* recordingSender("succeed")
      const logs = recordingLogger()
      yield* Effect.gen(function*() {
        yield* awaitSubscribed
        channel.sendToQueue(queue, Buffer.from("{\"orderId\": 17"), { messageId: "poison-1", persistent: true })
        const deadLettered = yield* nextMessage(channel, `${queue}.dlq`)
        expect(deadLettered.content.toString()).toBe("{\"orderId\": 17")
        expect(deadLettered.properties.messageId).toBe("poison-1")
        // Moved by the consumer with its story, not by the broker.
        const headers = deadLettered.properties.headers ?? {}
        expect(headers["x-failure-reason"]).toMatch(/^not a valid SendNotificationCommand \(.+\)$/)
        expect(headers["x-attempts"]).toBe(1)
        expect(headers["x-original-queue"]).toBe(queue)
        expect(headers["x-first-failed-at"]).toBe(headers["x-last-failed-at"])
        expect(new Date(String(headers["x-last-failed-at"])).getTime()).toBeGreaterThan(Date.now() - 60_000)
        expect(headers["x-death"]).toBeUndefined()
      }).pipe(Effect.provide(notificationConsumer({ COMMAND_QUEUE: queue }, sender.layer).pipe(Layer.provide(logs.layer))))
      expect(sender.attempts).toEqual([])
      expect(logs.lines.some((line) => /^Dead-lettered: not a valid SendNotificationCommand \(.+\)$/.test(line))).toBe(true)
    }))

  it.scopedLive("requeues a failed send and dead-letters it after NOTIFICATION_MAX_ATTEMPTS deliveries", () =>
    Effect.gen(function*() {
      const queue = uniqueQueueName("retry")
      const { channel } = yield* testBroker(queue)
      const sender = yield* recordingSender("fail")
      const command = newCommand()
      yield* Effect.gen(function*() {
        yield* awaitSubscribed
        channel.sendToQueue(queue, encodeCommand(command), commandProperties(command.orderId, "test"))
        const deadLettered = yield* nextMessage(channel, `${queue}.dlq`)
        expect(deadLettered.properties.messageId).toBe(command.orderId)
      }).pipe(Effect.provide(notificationConsumer({ COMMAND_QUEUE: queue, NOTIFICATION_MAX_ATTEMPTS: 3 }, sender.layer)))
      expect(sender.attempts).toEqual([command.orderId, command.orderId, command.orderId])
      expect(yield* queueDepth(queue)).toBe(0)
    }))

  it.scopedLive("says in one line what to do when the queue exists with other arguments, and is not ready", () =>
    Effect.gen(function*() {
      const queue = uniqueQueueName("mismatch")
      const { channel } = yield* testBroker(queue)
      // A classic queue, as the original demo declared it.
      yield* Effect.promise(() => channel.assertQueue(queue, { durable: true }))
      const sender = yield* recordingSender("succeed")
      const logs = recordingLogger()
      yield* Effect.gen(function*() {
        yield* eventually(
          () => Promise.resolve(logs.lines.filter((line) => line.includes("already exists with other arguments"))),
          (found) => found.length > 0,
          { what: "the mismatch line" }
        )
        const consumer = yield* CommandConsumer
        expect(yield* consumer.isReady).toBe(false)
      }).pipe(Effect.provide(notificationConsumer({ COMMAND_QUEUE: queue }, sender.layer).pipe(Layer.provide(logs.layer))))
      const line = logs.lines.find((l) => l.includes("already exists"))!
      expect(line).toContain(`Queue "${queue}"`)
      expect(line).toContain(`rabbitmqctl delete_queue ${queue}`)
      expect(line).not.toContain("\n")
    }))

  it.scopedLive("declares the same topology as the publisher, so either may start first", () =>
    Effect.gen(function*() {
      const queue = uniqueQueueName("topology")
      const { channel } = yield* testBroker(queue)
      yield* declareWorkQueue(channel, queue)
      const sender = yield* recordingSender("succeed")
      yield* awaitSubscribed.pipe(Effect.provide(notificationConsumer({ COMMAND_QUEUE: queue }, sender.layer)))
    }))
})
