import { describe, expect, it } from "@effect/vitest"
import { Effect } from "effect"
import { AMQP_URL, eventually, testBroker, uniqueQueueName } from "../support/broker"
import { freePort, spawnService } from "../support/processes"

interface JsonLine {
  readonly message: unknown
  readonly logLevel: string
  readonly timestamp: string
  readonly annotations: Record<string, unknown>
}

describe("LOG_FORMAT=json (npm start: both services in one process)", () => {
  it.scopedLive("prints one JSON object a line, once, with the orderId annotated on every line about the order", () =>
    Effect.gen(function*() {
      const queue = uniqueQueueName("logs")
      yield* testBroker(queue)
      const [port, healthPort] = [yield* freePort, yield* freePort]
      const service = yield* spawnService("main.ts", {
        AMQP_URL,
        COMMAND_QUEUE: queue,
        PORT: port,
        NOTIFICATION_HEALTH_PORT: healthPort,
        LOG_FORMAT: "json",
        LOG_LEVEL: "debug",
        // Every send fails, so the order's retry and dead-letter lines are printed too.
        NOTIFICATION_FAILURE_RATE: 1,
        NOTIFICATION_MAX_ATTEMPTS: 2,
        NOTIFICATION_SEND_DELAY_MS: 0
      })
      yield* eventually(
        () => fetch(`http://127.0.0.1:${port}/health/ready`).then((r) => r.status, () => 0),
        (status) => status === 200,
        { what: "the order service to be ready" }
      )

      const response = yield* Effect.promise(() =>
        fetch(`http://127.0.0.1:${port}/orders`, {
          method: "POST",
          headers: { "content-type": "application/json" },
          body: JSON.stringify({ userId: 42 })
        })
      )
      expect(response.status).toBe(201)
      const { order } = (yield* Effect.promise(() => response.json())) as { order: { orderId: string } }
      yield* service.waitForLine(/Dead-lettered/)

      const printed = service.lines.filter((line) => line.trim() !== "" && !line.startsWith("npm warn"))
      const parsed = printed.map((line) => JSON.parse(line) as JsonLine)
      expect(parsed.every((line) => typeof line.logLevel === "string" && typeof line.timestamp === "string")).toBe(true)
      // Printed once: no line appears twice (runMain's own logger would repeat each one).
      expect(new Set(printed).size).toBe(printed.length)

      const aboutTheOrder = parsed.filter((line) => JSON.stringify(line.message).includes(order.orderId))
      expect(aboutTheOrder.map((line) => line.message)).toEqual(expect.arrayContaining([
        `Sending notification for order ${order.orderId}`,
        expect.stringMatching(/^Send failed, requeued: .*attempt 1 of 2/),
        expect.stringMatching(/^Dead-lettered: .*gave up after 2 attempts/)
      ]))
      for (const line of aboutTheOrder) expect(line.annotations.orderId).toBe(order.orderId)

      // The broker URL is logged with its password masked.
      expect(printed.some((line) => line.includes("amqp://guest:***@"))).toBe(true)
      expect(printed.join("\n")).not.toContain("guest:guest")
    }), 60_000)
})
