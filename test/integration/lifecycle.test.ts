import { describe, expect, it } from "@effect/vitest"
import { Effect } from "effect"
import { makeOrderId, UserId } from "../../src/domain/Order"
import { declareWorkQueue } from "../../src/messaging/QueueTopology"
import { commandProperties, encodeCommand, SendNotificationCommand } from "../../src/contracts/SendNotificationCommand"
import { queueDepth, testBroker, uniqueQueueName } from "../support/broker"
import { createServer } from "node:net"
import { freePort, spawnService } from "../support/processes"

const messageOf = (line: string) => {
  try {
    return String((JSON.parse(line) as { message: unknown }).message)
  } catch {
    return line
  }
}

describe("services as processes", () => {
  /**
   * Queues `queued` commands, starts a consumer with `prefetch` sends of 1.5 s, signals SIGTERM once
   * the first `prefetch` are all mid-send, and waits for it to exit.
   */
  const sigtermWithSendsInFlight = (label: string, { prefetch, queued }: { readonly prefetch: number; readonly queued: number }) =>
    Effect.gen(function*() {
      const queue = uniqueQueueName(label)
      const { channel } = yield* testBroker(queue)
      yield* declareWorkQueue(channel, queue)
      const commands = Array.from({ length: queued }, () => new SendNotificationCommand({ orderId: makeOrderId(), userId: UserId.make(1) }))
      for (const command of commands) channel.sendToQueue(queue, encodeCommand(command), commandProperties(command.orderId, "test"))

      const service = yield* spawnService("notification/main.ts", {
        COMMAND_QUEUE: queue,
        NOTIFICATION_PREFETCH: prefetch,
        NOTIFICATION_SEND_DELAY_MS: 1500,
        NOTIFICATION_HEALTH_PORT: yield* freePort
      })
      for (const command of commands.slice(0, prefetch)) {
        yield* service.waitForLine(new RegExp(`Sending notification for order ${command.orderId}`))
      }
      service.child.kill("SIGTERM")
      return { queue, service, exitCode: yield* service.exitCode }
    })

  it.scopedLive("on SIGTERM, finish the sends in flight, ack them all, and exit 0", () =>
    Effect.gen(function*() {
      // All five are mid-send (1.5 s each) when the signal arrives.
      const { exitCode, queue, service } = yield* sigtermWithSendsInFlight("sigterm", { prefetch: 5, queued: 5 })
      expect(exitCode).toBe(0)

      // Nothing is left or came back: every in-flight delivery was acked before the channel closed.
      expect(yield* queueDepth(queue)).toBe(0)
      expect(service.lines.filter((line) => messageOf(line).startsWith("Sending notification")).length).toBe(5)
      expect(service.lines.some((line) => /redeliver/.test(line))).toBe(false)
    }), 60_000)

  it.scopedLive("on SIGTERM with 50 sends in flight, every one of their acks counts: only the undelivered are left", () =>
    Effect.gen(function*() {
      // RabbitMQ 3.10 holds back a channel's settles beyond about 32 not yet applied, and drops
      // them when the channel closes: the drain's acks must not reach the broker as 50 frames.
      // The first 50 are mid-send when the signal arrives; the last 10 were never delivered.
      const { exitCode, queue } = yield* sigtermWithSendsInFlight("sigterm50", { prefetch: 50, queued: 60 })
      expect(exitCode).toBe(0)
      expect(yield* queueDepth(queue)).toBe(10)
    }), 60_000)

  it.scopedLive("SHUTDOWN_TIMEOUT_MS bounds the drain: a send still running then is left to the broker", () =>
    Effect.gen(function*() {
      const queue = uniqueQueueName("shutdowntimeout")
      const { channel } = yield* testBroker(queue)
      yield* declareWorkQueue(channel, queue)
      const command = new SendNotificationCommand({ orderId: makeOrderId(), userId: UserId.make(1) })
      channel.sendToQueue(queue, encodeCommand(command), commandProperties(command.orderId, "test"))

      const service = yield* spawnService("notification/main.ts", {
        COMMAND_QUEUE: queue,
        NOTIFICATION_SEND_DELAY_MS: 60_000,
        SHUTDOWN_TIMEOUT_MS: 1000,
        NOTIFICATION_HEALTH_PORT: yield* freePort
      })
      yield* service.waitForLine(new RegExp(`Sending notification for order ${command.orderId}`))
      const signalledAt = Date.now()
      service.child.kill("SIGTERM")
      expect(yield* service.exitCode).toBe(0)
      // One second of drain, then the send is abandoned: well before the minute it would take.
      expect(Date.now() - signalledAt).toBeLessThan(10_000)
      // Not acked, so the broker has it back for the next consumer.
      const redelivered = yield* Effect.promise(() => channel.get(queue, { noAck: true }))
      expect(redelivered !== false && redelivered.properties.messageId).toBe(command.orderId)
    }), 60_000)

  it.scopedLive("an invalid configuration value stops the service with exit 1 and one line naming it", () =>
    Effect.gen(function*() {
      const service = yield* spawnService("order/main.ts", { PORT: "abc" })
      expect(yield* service.exitCode).toBe(1)
      const printed = service.lines.filter((line) => line.trim() !== "")
      expect(printed).toHaveLength(1)
      expect(messageOf(printed[0]!)).toBe("Invalid configuration: PORT must be an integer from 1 to 65535 (got \"abc\")")
    }))

  it.scopedLive("a port already in use stops the service with exit 1 and one line, no stack trace", () =>
    Effect.gen(function*() {
      const port = yield* freePort
      const squatter = createServer()
      yield* Effect.acquireRelease(
        Effect.promise(() => new Promise<void>((resolve) => squatter.listen(port, resolve))),
        () => Effect.promise(() => new Promise<void>((resolve) => squatter.close(() => resolve())))
      )
      const queue = uniqueQueueName("busyport")
      yield* testBroker(queue) // deletes the queue, should the service have declared it before failing
      const service = yield* spawnService("order/main.ts", { PORT: port, COMMAND_QUEUE: queue })
      expect(yield* service.exitCode).toBe(1)
      const errors = service.lines.filter((line) => line.includes("\"ERROR\""))
      expect(errors).toHaveLength(1)
      expect(messageOf(errors[0]!)).toMatch(/^Cannot serve HTTP: listen EADDRINUSE.*\(check PORT or NOTIFICATION_HEALTH_PORT\)$/)
      expect(service.lines.some((line) => line.includes("    at "))).toBe(false)
    }))

  it.scopedLive("several notification services on one host: NOTIFICATION_HEALTH_PORT=0 gives each a free port, logged", () =>
    Effect.gen(function*() {
      const queue = uniqueQueueName("several")
      yield* testBroker(queue)
      const services = yield* Effect.all(
        [1, 2].map(() => spawnService("notification/main.ts", { COMMAND_QUEUE: queue, NOTIFICATION_HEALTH_PORT: 0 })),
        { concurrency: "unbounded" }
      )
      const ports = yield* Effect.forEach(services, (service) =>
        Effect.map(service.waitForLine(/Listening on http:\/\/[^:]+:\d+/), (line) => Number(/:(\d+)$/.exec(messageOf(line))![1])))
      expect(new Set(ports).size).toBe(2)
      expect(ports).not.toContain(3001)
      for (const service of services) yield* service.waitForLine(new RegExp(`Consuming ${queue.replaceAll(".", "\\.")} `))
      for (const port of ports) {
        const response = yield* Effect.promise(() => fetch(`http://127.0.0.1:${port}/health/ready`))
        expect(response.status).toBe(200)
      }
    }))

  it.scopedLive("an invalid LOG_FORMAT is reported too", () =>
    Effect.gen(function*() {
      const service = yield* spawnService("notification/main.ts", { LOG_FORMAT: "xml" })
      expect(yield* service.exitCode).toBe(1)
      expect(service.lines.join("\n")).toContain("LOG_FORMAT must be one of pretty, json, logfmt (got \"xml\")")
    }))

  it.scopedLive("with no broker, says so in one line without the password, keeps retrying, and still stops cleanly", () =>
    Effect.gen(function*() {
      const service = yield* spawnService("notification/main.ts", {
        AMQP_URL: "amqp://guest:s3cret@127.0.0.1:1",
        NOTIFICATION_HEALTH_PORT: yield* freePort
      })
      const first = yield* service.waitForLine(/Broker not reachable/)
      expect(messageOf(first)).toMatch(/^Broker not reachable at amqp:\/\/guest:\*\*\*@127\.0\.0\.1:1 \(.*ECONNREFUSED.*\); retrying with backoff$/)
      // Still retrying: a later attempt is reported too.
      yield* service.waitForLine(/Broker not reachable/, { count: 2 })
      service.child.kill("SIGTERM")
      expect(yield* service.exitCode).toBe(0)
      expect(service.lines.join("\n")).not.toContain("s3cret")
      expect(service.lines.some((line) => line.includes("    at "))).toBe(false)
    }), 30_000)

  it.scopedLive("the order service drains in-flight requests on SIGTERM before closing its channel", () =>
    Effect.gen(function*() {
      const queue = uniqueQueueName("ordershutdown")
      const { channel } = yield* testBroker(queue)
      const port = yield* freePort
      const service = yield* spawnService("order/main.ts", { COMMAND_QUEUE: queue, PORT: port })
      yield* service.waitForLine(/Connected to/)
      yield* Effect.promise(async () => {
        for (;;) {
          const ready = await fetch(`http://127.0.0.1:${port}/health/ready`).then((r) => r.status).catch(() => 0)
          if (ready === 200) return
          await new Promise((resolve) => setTimeout(resolve, 20))
        }
      })
      // Twenty keep-alive clients post in a loop, through the signal, until the service goes away.
      // Each request gets an answer or a connection error (never hangs), and every 201 is queued.
      let successes = 0
      let signalled = false
      const accepted: Array<string> = []
      const client = async () => {
        const statuses: Array<number | "connection error"> = []
        for (;;) {
          const status = await fetch(`http://127.0.0.1:${port}/orders`, {
            method: "POST",
            headers: { "content-type": "application/json" },
            body: JSON.stringify({ userId: 1 }),
            signal: AbortSignal.timeout(10_000)
          }).then(async (response) => {
            if (response.status === 201) accepted.push(((await response.json()) as { order: { orderId: string } }).order.orderId)
            return response.status
          }, (error: Error) => error.name === "TimeoutError" ? -1 : "connection error" as const)
          statuses.push(status)
          if (status === 201 && ++successes === 100 && !signalled) {
            signalled = true
            service.child.kill("SIGTERM")
          }
          if (status !== 201) return statuses
        }
      }
      const statuses = (yield* Effect.promise(() => Promise.all(Array.from({ length: 20 }, client)))).flat()
      expect(yield* service.exitCode).toBe(0)
      expect(statuses).not.toContain(-1) // no request hung
      expect(statuses.every((status) => status === 201 || status === "connection error")).toBe(true)
      const created = statuses.filter((status) => status === 201).length
      expect(created).toBeGreaterThanOrEqual(100)
      const queued: Array<string> = []
      for (;;) {
        const message = yield* Effect.promise(() => channel.get(queue, { noAck: true }))
        if (message === false) break
        queued.push(String(message.properties.messageId))
      }
      // Every 201 is on the queue, each command once: the relay sent what was committed before it
      // stopped, and sent nothing twice. (An order whose answer was cut off by the connection's
      // close may be there too: at most one per client.)
      expect(new Set(queued).size).toBe(queued.length)
      expect(accepted.filter((id) => !queued.includes(id))).toEqual([])
      expect(queued.length - accepted.length).toBeLessThanOrEqual(20)
    }), 30_000)
})
