import { describe, expect, it } from "@effect/vitest"
import { Effect } from "effect"
import { createServer } from "node:http"
import type { AddressInfo } from "node:net"
import { AMQP_URL, testBroker } from "../support/broker"
import { faultQueue, startNotificationService, startOrderService } from "../support/faultRig"
import { runTool } from "../support/processes"

/**
 * A queue name of the test's own on the shared broker: `faultQueue` removes the order service's store
 * folder, `testBroker` deletes the queues there (faultQueue's own deletion is for the fault node).
 */
const sharedBrokerQueue = (label: string) => Effect.tap(faultQueue(label), (queue) => testBroker(queue))

/** Runs `npm run verify -- ...args` as a user would, to its exit. */
const verify = (args: ReadonlyArray<string>, env: Record<string, string> = {}) => runTool("verify", args, env)

const lastLine = (text: string) => text.trimEnd().split("\n").at(-1) ?? ""

/** The account table's value for `row` ("accepted  30" gives "30"). */
const tableValue = (stdout: string, row: string) => new RegExp(`^${row}\\s+(.+)$`, "m").exec(stdout)?.[1]

/** An order service double answering every POST and every GET as `answer` says: a deployment gone wrong. */
const orderServiceDouble = (answer: (method: string, index: number) => { readonly status: number; readonly body: unknown }) =>
  Effect.acquireRelease(
    Effect.async<{ readonly url: string; readonly close: () => void }>((resume) => {
      let next = 0
      const server = createServer((request, response) => {
        request.resume()
        request.on("end", () => {
          const { body, status } = answer(request.method ?? "GET", next++)
          response.writeHead(status, { "content-type": "application/json" })
          response.end(JSON.stringify(body))
        })
      })
      server.listen(0, "127.0.0.1", () =>
        resume(Effect.succeed({ url: `http://127.0.0.1:${(server.address() as AddressInfo).port}`, close: () => server.close() })))
    }),
    ({ close }) => Effect.sync(close)
  )

/** Accepts every order, then knows none of them: a deployment that lost its store. */
const forgetfulOrderService = orderServiceDouble((method, index) =>
  method === "POST"
    ? { status: 201, body: { message: "Order created", order: { orderId: `01900000-0000-7000-8000-${String(index).padStart(12, "0")}`, userId: 1 } } }
    : { status: 404, body: { _tag: "OrderNotFound", message: "No such order" } })

/** Refuses every order as a bad request: a URL that is not an order service, or the wrong version of one. */
const refusingService = orderServiceDouble(() => ({ status: 400, body: { _tag: "MalformedRequest", message: "Not here" } }))

describe("npm run verify", () => {
  it.scopedLive("accounts for every order of a running deployment: all notified, exit 0, a progress line while it waits", () =>
    Effect.gen(function*() {
      const queue = yield* sharedBrokerQueue("verify")
      const orders = yield* startOrderService(queue, { AMQP_URL })
      yield* startNotificationService(queue, { AMQP_URL, NOTIFICATION_SEND_DELAY_MS: 2500, NOTIFICATION_PREFETCH: 50 })

      const run = yield* verify(["--url", `http://127.0.0.1:${orders.port}`, "--orders", "30", "--concurrency", "5", "--json"])

      expect(run.code, run.stderr).toBe(0)
      const account = JSON.parse(run.stdout) as Record<string, unknown>
      expect(account).toMatchObject({ accepted: 30, refused: 0, notified: 30, failed: 0, pending: 0, unknown: 0, lost: 0, duplicated: 0 })
      expect(account["lostIds"]).toEqual([])
      // The send takes 2.5 s: the tool waited, and said so.
      expect(run.stderr).toMatch(/^waiting for \d+ of 30 accepted orders to finish: \d+ notified, 0 failed \(\d+ s left\)$/m)
    }), 120_000)

  it.scopedLive("sends ORDER_API_TOKEN as a bearer token: refused without it, accepted with it", () =>
    Effect.gen(function*() {
      const queue = yield* sharedBrokerQueue("verify-token")
      const token = `token-${Math.random().toString(36).slice(2)}`
      const orders = yield* startOrderService(queue, { AMQP_URL, ORDER_API_TOKEN: token })
      yield* startNotificationService(queue, { AMQP_URL })
      const url = `http://127.0.0.1:${orders.port}`

      const without = yield* verify(["--url", url, "--orders", "2", "--json"])
      expect(without.code).toBe(1)
      expect(JSON.parse(without.stdout)).toMatchObject({ accepted: 0, refused: 2 })
      expect((JSON.parse(without.stdout) as { refusals: ReadonlyArray<string> }).refusals[0]).toMatch(/^HTTP 401 .*Unauthorized/)

      const withToken = yield* verify(["--url", url, "--orders", "2", "--json"], { ORDER_API_TOKEN: token })
      expect(withToken.code, withToken.stderr).toBe(0)
      expect(JSON.parse(withToken.stdout)).toMatchObject({ accepted: 2, notified: 2, lost: 0 })
    }), 120_000)

  it.scopedLive("exits 1 and names the orders when accepted ones never finish within --wait", () =>
    Effect.gen(function*() {
      // No notification service: the commands wait in the queue, the orders stay queued.
      const queue = yield* sharedBrokerQueue("verify-stuck")
      const orders = yield* startOrderService(queue, { AMQP_URL })

      const run = yield* verify(["--url", `http://127.0.0.1:${orders.port}`, "--orders", "5", "--wait", "2"])

      expect(run.code).toBe(1)
      expect(tableValue(run.stdout, "accepted")).toBe("5")
      expect(tableValue(run.stdout, "notified")).toBe("0")
      expect(tableValue(run.stdout, "pending")).toBe("5")
      expect(tableValue(run.stdout, "lost")).toBe("5")
      expect(run.stdout).toMatch(/^lost orders: (\S+ ){4}\S+$/m)
      expect(lastLine(run.stderr)).toBe("5 of 5 accepted orders were lost")
    }), 60_000)

  it.scopedLive("counts orders the deployment accepted and then does not know as lost", () =>
    Effect.gen(function*() {
      const { url } = yield* forgetfulOrderService

      const run = yield* verify(["--url", url, "--orders", "3", "--wait", "5", "--json"])

      expect(run.code).toBe(1)
      expect(JSON.parse(run.stdout)).toMatchObject({ accepted: 3, unknown: 3, pending: 0, lost: 3 })
    }), 60_000)

  it.scopedLive("says so in one line, exit 1, when no order is accepted at all", () =>
    Effect.gen(function*() {
      const { url } = yield* refusingService

      const run = yield* verify(["--url", url, "--orders", "2"])

      expect(run.code).toBe(1)
      expect(tableValue(run.stdout, "refused")).toBe("2")
      expect(lastLine(run.stderr)).toBe("No order was accepted: is an order service running at --url?")
    }), 60_000)

  it.live("--help describes the options; a bad argument is one line and exit 2", () =>
    Effect.gen(function*() {
      const help = yield* verify(["--help"])
      expect(help.code).toBe(0)
      for (const option of ["--url", "--orders", "--concurrency", "--rate", "--wait", "--json"]) expect(help.stdout).toContain(option)

      const bad = yield* Effect.all([
        verify(["--orders", "0"]),
        verify(["--url", "ftp://example.com"]),
        verify(["--rate", "fast"]),
        verify(["--no-such-option"])
      ], { concurrency: "unbounded" })
      for (const run of bad) {
        expect(run.code, run.stderr).toBe(2)
        expect(run.stdout).toBe("")
        expect(run.stderr.trimEnd().split("\n")).toHaveLength(1)
      }
      expect(bad[0]!.stderr).toContain("--orders must be a positive integer (got 0)")
      expect(bad[1]!.stderr).toContain(`--url must be an http:// or https:// URL (got "ftp://example.com")`)
    }), 60_000)
})
