import { describe, expect, it } from "@effect/vitest"
import { Effect } from "effect"
import { connect, type Socket } from "node:net"
import {
  CONNECTIONS_CHECKING_INTERVAL_MS,
  HEADERS_TIMEOUT_MS,
  MAX_HEADER_BYTES,
  REQUEST_TIMEOUT_MS
} from "../../src/runtime/HttpLimits"
import { AMQP_URL, testBroker, uniqueQueueName } from "../support/broker"
import { waitForReadiness } from "../support/faultRig"
import { freePort, spawnService } from "../support/processes"

/** Room for a loaded machine between Node's check finding a request late and the client seeing the close. */
const SLACK_MS = 3_000

/** The order service as a child process on a port and queue of its own, once it answers ready. */
const orderService = (label: string, env: Record<string, string | number> = {}) =>
  Effect.gen(function*() {
    const queue = uniqueQueueName(`hardening.${label}`)
    yield* testBroker(queue) // deletes the service's queues once it is killed
    const port = yield* freePort
    const service = yield* spawnService("order/main.ts", { AMQP_URL, COMMAND_QUEUE: queue, PORT: port, ...env })
    yield* waitForReadiness(port, 200, { what: "the order service to be ready" })
    return { ...service, port }
  })

interface RawConnection {
  readonly socket: Socket
  readonly connectedAt: number
  /** Everything the server sent so far. */
  readonly received: () => string
  readonly isClosed: () => boolean
  /** Resolves when the connection closes, with when. */
  readonly closed: Promise<number>
}

/** A TCP connection for bytes no HTTP client would send, once connected; destroyed with the scope. */
const rawConnection = (port: number) =>
  Effect.acquireRelease(
    Effect.promise(() =>
      new Promise<RawConnection>((resolve, reject) => {
        const socket = connect(port, "127.0.0.1")
        const chunks: Array<Buffer> = []
        let closedAt: number | undefined
        socket.on("data", (chunk: Buffer) => chunks.push(chunk))
        // A reset, or a write after the server closed: what counts is the close.
        socket.on("error", () => undefined)
        socket.once("error", reject)
        const closed = new Promise<number>((done) => socket.once("close", () => done(closedAt = performance.now())))
        socket.once("connect", () =>
          resolve({
            socket,
            connectedAt: performance.now(),
            received: () => Buffer.concat(chunks).toString("latin1"),
            isClosed: () => closedAt !== undefined,
            closed
          }))
      })
    ),
    ({ socket }) => Effect.sync(() => socket.destroy())
  )

/** Milliseconds from connecting to the server's close; fails if it has not closed within `deadlineMs` of now. */
const closedWithin = (connection: RawConnection, deadlineMs: number) =>
  Effect.promise(() => connection.closed).pipe(
    Effect.timeoutFail({ duration: deadlineMs, onTimeout: () => new Error(`still open after ${deadlineMs} ms`) }),
    Effect.map((closedAt) => closedAt - connection.connectedAt),
    Effect.orDie
  )

/** What a slowloris client does: one more byte every second, until the connection closes. */
const trickle = (socket: Socket) => {
  const timer = setInterval(() => socket.write("a"), 1_000)
  socket.once("close", () => clearInterval(timer))
}

/** The status, lowercased headers and body of the first answer in `raw`. */
const answerIn = (raw: string) => {
  const end = raw.indexOf("\r\n\r\n")
  const [statusLine = "", ...headerLines] = raw.slice(0, end).split("\r\n")
  const headers = Object.fromEntries(headerLines.map((line) => {
    const colon = line.indexOf(":")
    return [line.slice(0, colon).trim().toLowerCase(), line.slice(colon + 1).trim()]
  }))
  return { status: Number(statusLine.split(" ")[1]), headers, body: raw.slice(end + 4) }
}

/** A JSON error answer `{"_tag","message"}` with `status`. */
const expectJsonError = (raw: string, status: number, tag: string) => {
  const answer = answerIn(raw)
  expect(answer.status).toBe(status)
  expect(answer.headers["content-type"]).toBe("application/json")
  expect(JSON.parse(answer.body)).toEqual({ _tag: tag, message: expect.any(String) })
}

// Each test runs its own service, so they can wait out their timeouts side by side.
describe.concurrent("HTTP limits of the order service (as a process)", () => {
  it.scopedLive("a client trickling its headers a byte a second gets 408 and is cut off at the headers timeout", () =>
    Effect.gen(function*() {
      const { port } = yield* orderService("headers")
      const slow = yield* rawConnection(port)
      slow.socket.write("POST /orders HTTP/1.1\r\nhost: localhost\r\nx-slow: ")
      trickle(slow.socket)

      const afterMs = yield* closedWithin(slow, HEADERS_TIMEOUT_MS + CONNECTIONS_CHECKING_INTERVAL_MS + SLACK_MS)
      // Not before: the timer starts with the request's first byte, written once connected.
      expect(afterMs).toBeGreaterThanOrEqual(HEADERS_TIMEOUT_MS)
      expectJsonError(slow.received(), 408, "RequestTimeout")
    }), 90_000)

  it.scopedLive("a client trickling its body a byte a second gets 408 and is cut off at the request timeout", () =>
    Effect.gen(function*() {
      const { port, lines } = yield* orderService("body")
      const slow = yield* rawConnection(port)
      slow.socket.write(
        "POST /orders HTTP/1.1\r\nhost: localhost\r\ncontent-type: application/json\r\ncontent-length: 100\r\n\r\n{"
      )
      trickle(slow.socket)

      const afterMs = yield* closedWithin(slow, REQUEST_TIMEOUT_MS + CONNECTIONS_CHECKING_INTERVAL_MS + SLACK_MS)
      // Its headers were complete, so the headers timeout (shorter) did not apply.
      expect(afterMs).toBeGreaterThanOrEqual(REQUEST_TIMEOUT_MS)
      expectJsonError(slow.received(), 408, "RequestTimeout")
      // A cut-off request is not the service's failure: nothing to alarm an operator.
      expect(lines.filter((line) => line.includes("\"ERROR\""))).toEqual([])
    }), 90_000)

  it.scopedLive("headers over the limit get 431 with a JSON body; headers just under it are served", () =>
    Effect.gen(function*() {
      const { port } = yield* orderService("headersize")
      const request = (cookieBytes: number) =>
        Effect.gen(function*() {
          const connection = yield* rawConnection(port)
          connection.socket.write(
            `GET /health/live HTTP/1.1\r\nhost: localhost\r\nconnection: close\r\ncookie: ${"a".repeat(cookieBytes)}\r\n\r\n`
          )
          yield* closedWithin(connection, 10_000)
          return connection.received()
        })

      expectJsonError(yield* request(MAX_HEADER_BYTES + 4 * 1024), 431, "RequestHeaderFieldsTooLarge")
      expect(answerIn(yield* request(MAX_HEADER_BYTES - 1024)).status).toBe(200)
    }), 90_000)

  it.scopedLive("5,000 idle connections do not stop others being served, and the headers timeout closes them", () =>
    Effect.gen(function*() {
      const { port } = yield* orderService("idle")
      // Both processes need 5,000 file descriptors more; Node raises its soft limit to the hard one.
      const idle = yield* Effect.forEach(Array.from({ length: 5_000 }), () => rawConnection(port), { concurrency: 250 })

      // The server accepts connections in order, so by the time these are answered it holds every idle one.
      const [created, ready] = yield* Effect.promise(() =>
        Promise.all([
          fetch(`http://127.0.0.1:${port}/orders`, {
            method: "POST",
            headers: { "content-type": "application/json" },
            body: JSON.stringify({ userId: 7 }),
            signal: AbortSignal.timeout(5_000)
          }).then((response) => response.status),
          fetch(`http://127.0.0.1:${port}/health/ready`, { signal: AbortSignal.timeout(5_000) }).then((response) => response.status)
        ])
      )
      expect([created, ready]).toEqual([201, 200])
      // None was dropped to make room: each still held a connection of its own.
      expect(idle.filter((connection) => connection.isClosed())).toHaveLength(0)

      const lastConnectedAt = Math.max(...idle.map((connection) => connection.connectedAt))
      const deadline = lastConnectedAt + HEADERS_TIMEOUT_MS + CONNECTIONS_CHECKING_INTERVAL_MS + SLACK_MS - performance.now()
      const lifetimes = yield* Effect.forEach(idle, (connection) => closedWithin(connection, deadline), { concurrency: "unbounded" })
      // The server's timer starts when it accepts, which can come a little before the client hears of the connection.
      expect(Math.min(...lifetimes)).toBeGreaterThanOrEqual(HEADERS_TIMEOUT_MS - 500)
      expect(idle.filter((connection) => answerIn(connection.received()).status !== 408)).toHaveLength(0)
    }), 90_000)

  it.scopedLive("SIGTERM with clients trickling headers and a body: exits 0 within SHUTDOWN_TIMEOUT_MS and a margin", () =>
    Effect.gen(function*() {
      const shutdownTimeoutMs = 2_000
      const service = yield* orderService("shutdown", { SHUTDOWN_TIMEOUT_MS: shutdownTimeoutMs })

      // One answered request first, so the connection is surely accepted before its next request trickles in.
      const midHeaders = yield* rawConnection(service.port)
      midHeaders.socket.write("GET /health/live HTTP/1.1\r\nhost: localhost\r\n\r\n")
      yield* Effect.promise(() => new Promise((resolve) => midHeaders.socket.once("data", resolve)))
      midHeaders.socket.write("POST /orders HTTP/1.1\r\nhost: localhost\r\nx-slow: ")
      trickle(midHeaders.socket)

      // `100 Continue` says the server has the headers: the request is in flight, waiting for its body.
      const midBody = yield* rawConnection(service.port)
      midBody.socket.write(
        "POST /orders HTTP/1.1\r\nhost: localhost\r\ncontent-type: application/json\r\ncontent-length: 100\r\n" +
          "expect: 100-continue\r\n\r\n"
      )
      yield* Effect.promise(() => new Promise((resolve) => midBody.socket.once("data", resolve)))
      expect(midBody.received()).toMatch(/^HTTP\/1\.1 100 Continue\r\n/)
      midBody.socket.write("{")
      trickle(midBody.socket)

      const signalledAt = performance.now()
      service.child.kill("SIGTERM")
      const exitCode = yield* service.exitCode.pipe(
        Effect.timeoutFail({ duration: shutdownTimeoutMs + SLACK_MS, onTimeout: () => new Error("the service did not exit") }),
        Effect.orDie
      )
      expect(exitCode).toBe(0)
      expect(performance.now() - signalledAt).toBeLessThan(shutdownTimeoutMs + SLACK_MS)
    }), 90_000)
})
