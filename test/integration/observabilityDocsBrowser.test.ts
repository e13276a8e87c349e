import { HttpServer } from "@effect/platform"
import { describe, expect, it } from "@effect/vitest"
import { Effect } from "effect"
import { chromium } from "playwright-core"
import { bundledChromium, chromiumArgs, findChromium } from "../support/browser"
import { eventually, nextMessage, testBroker, uniqueQueueName } from "../support/broker"
import { orderService } from "../support/services"

/**
 * GET /docs in a real browser, driven by playwright-core: the Chromium that `findChromium` picks
 * (CHROMIUM_PATH, else Debian's, else the one the npm package @sparticuz/chromium ships), and the
 * npm-shipped one on every run too, so that the fallback a fresh machine relies on is proven even
 * where Debian's chromium is installed.
 */
const launch = (executablePath: Effect.Effect<string>) =>
  Effect.acquireRelease(
    Effect.flatMap(executablePath, (path) =>
      Effect.promise(() => chromium.launch({ executablePath: path, headless: true, args: [...chromiumArgs] }))),
    (b) => Effect.promise(() => b.close())
  )

const browsers = [
  { name: "the browser findChromium picks", path: Effect.promise(() => findChromium()).pipe(Effect.map((found) => found.executablePath)) },
  { name: "the npm-shipped browser", path: Effect.promise(() => bundledChromium()) }
]

const serverUrl = Effect.map(HttpServer.HttpServer, ({ address }) => {
  if (address._tag !== "TcpAddress") throw new Error("expected a TCP server")
  return `http://127.0.0.1:${address.port}`
})

describe("GET /docs in headless Chromium", () => {
  it.live("picks CHROMIUM_PATH, then Debian's /usr/bin/chromium, then the npm-shipped one", () =>
    Effect.gen(function*() {
      const here = process.execPath // any file that exists
      const pick = (env: NodeJS.ProcessEnv, debianPath: string) => Effect.promise(() => findChromium({ env, debianPath }))
      expect(yield* pick({ CHROMIUM_PATH: here }, here)).toEqual({ executablePath: here, source: "CHROMIUM_PATH" })
      expect(yield* pick({}, here)).toEqual({ executablePath: here, source: "debian" })
      expect(yield* pick({ CHROMIUM_PATH: "" }, "/nonexistent/chromium")).toEqual({
        executablePath: yield* Effect.promise(() => bundledChromium()),
        source: "npm"
      })
      const wrong = yield* Effect.promise(() => findChromium({ env: { CHROMIUM_PATH: "/nonexistent/chromium" } }).then(() => "found", (e: Error) => e.message))
      expect(wrong).toBe("CHROMIUM_PATH is /nonexistent/chromium, and there is no file there")
    }), 60_000)

  it.scopedLive.each(browsers)("in $name: shows POST /orders, and its \"Try it out\" creates an order that reaches the queue", ({ path }) =>
    Effect.gen(function*() {
      const queue = uniqueQueueName("docs")
      const { channel } = yield* testBroker(queue)
      const chromiumBrowser = yield* launch(path)
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
