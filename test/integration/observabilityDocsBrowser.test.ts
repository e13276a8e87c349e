import { HttpServer } from "@effect/platform"
import { describe, expect, it } from "@effect/vitest"
import { Effect } from "effect"
import { existsSync } from "node:fs"
import { chromium } from "playwright-core"
import { eventually, nextMessage, testBroker, uniqueQueueName } from "../support/broker"
import { orderService } from "../support/services"

/**
 * GET /docs in a real browser: Debian's Chromium (installed by .ci/run), driven by playwright-core.
 * The flags keep Chromium off the network, which this machine does not have.
 */
const CHROMIUM = process.env.CHROMIUM_PATH ?? "/usr/bin/chromium"

const browser = Effect.acquireRelease(
  Effect.promise(() => {
    if (!existsSync(CHROMIUM)) {
      throw new Error(`No Chromium at ${CHROMIUM}: install it with \`apt-get install -y chromium\` (.ci/run does)`)
    }
    return chromium.launch({
      executablePath: CHROMIUM,
      headless: true,
      args: [
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync"
      ]
    })
  }),
  (b) => Effect.promise(() => b.close())
)

const serverUrl = Effect.map(HttpServer.HttpServer, ({ address }) => {
  if (address._tag !== "TcpAddress") throw new Error("expected a TCP server")
  return `http://127.0.0.1:${address.port}`
})

describe("GET /docs in headless Chromium", () => {
  it.scopedLive("shows POST /orders, and its \"Try it out\" creates an order that reaches the queue", () =>
    Effect.gen(function*() {
      const queue = uniqueQueueName("docs")
      const { channel } = yield* testBroker(queue)
      const chromiumBrowser = yield* browser
      yield* Effect.gen(function*() {
        const base = yield* serverUrl
        yield* eventually(
          () => fetch(`${base}/health/ready`).then((r) => r.status, () => 0),
          (status) => status === 200,
          { what: "the order service to be ready" }
        )
        const page = yield* Effect.promise(() => chromiumBrowser.newPage())
        const requestsOffMachine: Array<string> = []
        page.on("request", (request) => {
          if (!request.url().startsWith(base) && !request.url().startsWith("data:")) requestsOffMachine.push(request.url())
        })

        yield* Effect.promise(() => page.goto(`${base}/docs`))
        const operation = page.locator(".opblock-post").filter({ hasText: "/orders" })
        yield* Effect.promise(() => operation.waitFor({ state: "visible", timeout: 15_000 }))
        expect(yield* Effect.promise(() => operation.locator(".opblock-summary-description").innerText())).toBe(
          "Create an order"
        )

        // Open it, try it out with the example body, execute.
        yield* Effect.promise(() => operation.locator(".opblock-summary").click())
        yield* Effect.promise(() => operation.getByRole("button", { name: "Try it out" }).click())
        const body = operation.locator("textarea.body-param__text")
        yield* Effect.promise(() => body.fill(JSON.stringify({ userId: 42 })))
        yield* Effect.promise(() => operation.getByRole("button", { name: "Execute" }).click())

        const live = operation.locator(".live-responses-table .response")
        yield* Effect.promise(() => live.waitFor({ state: "visible", timeout: 15_000 }))
        expect(yield* Effect.promise(() => live.locator(".response-col_status").innerText())).toContain("201")
        const shown = yield* Effect.promise(() => live.locator(".response-col_description pre").first().innerText())
        const { order } = JSON.parse(shown) as { order: { orderId: string; userId: number } }
        expect(order.userId).toBe(42)

        // The order the page created is a real one: the relay puts its command on the queue.
        const message = yield* nextMessage(channel, queue).pipe(Effect.timeout("10 seconds"))
        expect(JSON.parse(message.content.toString())).toEqual({ orderId: order.orderId, userId: 42 })

        // Offline: the page loaded nothing from anywhere but the service.
        expect(requestsOffMachine).toEqual([])
      }).pipe(Effect.provide(orderService({ COMMAND_QUEUE: queue })))
    }), 60_000)
})
