import { HttpClient, HttpClientRequest, type HttpClientResponse } from "@effect/platform"
import { NodeHttpClient } from "@effect/platform-node"
import { describe, expect, it } from "@effect/vitest"
import { Deferred, Effect, Either, Exit, Fiber, Layer, Option, Scope, Stream, TestClock } from "effect"
import { connect, type Socket } from "node:net"
import { vi } from "vitest"
import { decodeCommand } from "../../src/contracts/SendNotificationCommand"
import { UserId } from "../../src/domain/Order"
import { HttpLive } from "../../src/order/Http"
import { Orders } from "../../src/order/Orders"
import { OrderStore } from "../../src/order/store/OrderStore"
import {
  failingOrderStore,
  orderApi,
  relayDouble,
  sqliteOrderStore,
  sqliteOrderStoreWith,
  withEnv
} from "../support/orderDoubles"
import { sampleValue } from "../support/observability"
import { freePort } from "../support/processes"

/** The order service's own HTTP server (`HttpLive`) on `port`. */
const orderServiceOn = (port: number, store: Layer.Layer<OrderStore, unknown>, env: Record<string, string> = {}) =>
  HttpLive.pipe(
    Layer.provide(Orders.Default),
    Layer.provide([store, relayDouble().layer]),
    Layer.provide(withEnv({ ...env, PORT: String(port) }))
  )

const clientOf = (port: number, options: { readonly keepAlive: boolean } = { keepAlive: false }) =>
  Layer.effect(
    HttpClient.HttpClient,
    Effect.map(HttpClient.HttpClient, HttpClient.mapRequest(HttpClientRequest.prependUrl(`http://127.0.0.1:${port}`)))
  ).pipe(Layer.provide(NodeHttpClient.layerWithoutAgent), Layer.provide(NodeHttpClient.makeAgentLayer(options)))

const post = (body: string, headers: Record<string, string> = {}) =>
  HttpClientRequest.post("/orders").pipe(
    HttpClientRequest.setHeaders(headers),
    HttpClientRequest.bodyText(body, "application/json"),
    HttpClient.execute
  )

const postOrder = (userId: number, idempotencyKey?: string) =>
  post(JSON.stringify({ userId }), idempotencyKey === undefined ? {} : { "idempotency-key": idempotencyKey })

const get = (url: string) => HttpClient.get(url)

const jsonOf = (response: HttpClientResponse.HttpClientResponse) =>
  Effect.map(response.json, (body) => body as Record<string, any>)

/** Status and JSON body of one answer. */
const answerOf = <E, R>(request: Effect.Effect<HttpClientResponse.HttpClientResponse, E, R>) =>
  Effect.flatMap(request, (response) => Effect.map(jsonOf(response), (body) => ({ status: response.status, body })))

/** What the store holds: a user's orders (newest first) and the commands waiting in the outbox. */
const storedOrders = (userId: number) =>
  Effect.flatMap(OrderStore, (store) => store.listOrders({ userId: UserId.make(userId), limit: 1000, before: Option.none() }))
const outboxPending = Effect.flatMap(OrderStore, (store) => Effect.map(store.outboxStats, (stats) => stats.pending))

const UUIDV7 = /^[0-9a-f]{8}-[0-9a-f]{4}-7[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/
const T0 = Date.parse("2025-06-01T12:00:00.000Z")

const badBodies: ReadonlyArray<[string, string, string]> = [
  ["not JSON", "{\"userId\": ", "MalformedRequest"],
  ["missing userId", "{}", "HttpApiDecodeError"],
  ["a string userId", "{\"userId\":\"42\"}", "HttpApiDecodeError"],
  ["a negative userId", "{\"userId\":-1}", "HttpApiDecodeError"],
  ["zero", "{\"userId\":0}", "HttpApiDecodeError"],
  ["a fractional userId", "{\"userId\":1.5}", "HttpApiDecodeError"],
  ["a null userId", "{\"userId\":null}", "HttpApiDecodeError"],
  ["an out-of-range userId", "{\"userId\":1e400}", "HttpApiDecodeError"],
  ["an unsafe integer", "{\"userId\":9007199254740993}", "HttpApiDecodeError"],
  ["an array", "[{\"userId\":42}]", "HttpApiDecodeError"],
  ["an empty body", "", "HttpApiDecodeError"]
]

describe("POST /orders", () => {
  it.scoped("answers 201 with a UUIDv7 order id and Location, having stored the order with its command", () => {
    const relay = relayDouble()
    return Effect.gen(function*() {
      yield* TestClock.setTime(T0)
      const response = yield* postOrder(42)
      expect(response.status).toBe(201)
      const body = yield* jsonOf(response)
      expect(body).toEqual({
        message: "Order created",
        order: {
          orderId: expect.stringMatching(UUIDV7),
          userId: 42,
          status: "accepted",
          createdAt: "2025-06-01T12:00:00.000Z",
          updatedAt: "2025-06-01T12:00:00.000Z",
          notifications: 0
        }
      })
      const orderId = body.order.orderId as string
      expect(response.headers["location"]).toBe(`/orders/${orderId}`)
      expect(response.headers["idempotent-replayed"]).toBeUndefined()

      // The order and its command, committed together; the relay woken once for it.
      expect((yield* storedOrders(42)).map((order) => order.orderId)).toEqual([orderId])
      const [entry, ...others] = yield* Effect.flatMap(OrderStore, (store) => store.claimOutbox(10))
      expect(others).toEqual([])
      expect(entry!.orderId).toBe(orderId)
      expect(Either.map(decodeCommand(Buffer.from(entry!.body)), ({ orderId, userId }) => ({ orderId, userId })))
        .toEqual(Either.right({ orderId, userId: 42 }))
      expect(relay.state.commits).toBe(1)
    }).pipe(Effect.provide(orderApi({ relay })))
  })

  it.scoped("gives every order its own id", () =>
    Effect.gen(function*() {
      const answers = yield* Effect.all(Array.from({ length: 20 }, () => answerOf(postOrder(5))), { concurrency: "unbounded" })
      expect(answers.every((answer) => answer.status === 201)).toBe(true)
      const ids = answers.map((answer) => answer.body.order.orderId)
      expect(new Set(ids).size).toBe(20)
      expect((yield* storedOrders(5)).map((order) => order.orderId).sort()).toEqual([...ids].sort())
      expect(yield* outboxPending).toBe(20)
    }).pipe(Effect.provide(orderApi())))

  for (const [what, body, tag] of badBodies) {
    it.scoped(`answers 400 ${tag} for ${what}, storing nothing`, () => {
      const relay = relayDouble()
      return Effect.gen(function*() {
        const response = yield* post(body)
        expect(response.status).toBe(400)
        const error = yield* jsonOf(response)
        expect(error._tag).toBe(tag)
        expect(typeof error.message).toBe("string")
        expect(String(error.message)).not.toContain("\n")
        expect(yield* outboxPending).toBe(0)
        expect(relay.state.commits).toBe(0)
      }).pipe(Effect.provide(orderApi({ relay })))
    })
  }

  it.scoped("names the field at fault in one line", () =>
    Effect.gen(function*() {
      const error = yield* post("{\"userId\":1.5}").pipe(Effect.flatMap(jsonOf))
      expect(error.message).toBe("userId: Expected an integer, actual 1.5")
      const negative = yield* post("{\"userId\":-1}").pipe(Effect.flatMap(jsonOf))
      expect(negative.message).toBe("userId: Expected a positive integer, actual -1")
    }).pipe(Effect.provide(orderApi())))

  it.scoped("answers 413 for a body over 64 KiB, storing nothing", () =>
    Effect.gen(function*() {
      const response = yield* post(JSON.stringify({ userId: 1, padding: "x".repeat(64 * 1024) }))
      expect(response.status).toBe(413)
      expect(yield* jsonOf(response)).toEqual({ _tag: "PayloadTooLarge", message: "The request body is over 65536 bytes" })
      expect(yield* outboxPending).toBe(0)
    }).pipe(Effect.provide(orderApi())))

  // The platform drops the connection, unanswered, when a chunked body passes its cap, and an
  // `HttpApi` middleware cannot answer first.
  it.scoped("cuts off a chunked body once it passes 64 KiB (the platform closes the connection), storing nothing", () =>
    Effect.gen(function*() {
      // No content-length: the size shows only while reading, 16 KiB at a time.
      const chunk = new TextEncoder().encode(" ".repeat(16 * 1024))
      const result = yield* HttpClientRequest.post("/orders").pipe(
        HttpClientRequest.bodyStream(
          Stream.make(new TextEncoder().encode("{\"userId\":1,\"padding\":\""), ...Array(5).fill(chunk)),
          { contentType: "application/json" }
        ),
        HttpClient.execute,
        Effect.flatMap((response) => Effect.map(jsonOf(response), (body) => ({ status: response.status, body }))),
        Effect.either
      )
      expect(Either.isLeft(result)).toBe(true)
      expect(yield* outboxPending).toBe(0)
    }).pipe(Effect.provide(orderApi())))

  it.scoped("accepts a body just under 64 KiB (the limit is the body, not the payload)", () =>
    Effect.gen(function*() {
      const body = JSON.stringify({ userId: 1, padding: "" })
      const padded = body.replace("\"\"", `"${"x".repeat(64 * 1024 - body.length)}"`)
      expect(Buffer.byteLength(padded)).toBe(64 * 1024)
      const response = yield* post(padded)
      expect(response.status).toBe(201)
    }).pipe(Effect.provide(orderApi())))

  it.scoped("counts accepted orders in GET /metrics", () =>
    Effect.gen(function*() {
      const accepted = Effect.flatMap(get("/metrics"), (response) => response.text).pipe(
        Effect.map((text) => sampleValue(text, "orders_accepted_total") ?? 0)
      )
      const before = yield* accepted
      expect((yield* postOrder(7)).status).toBe(201)
      expect(yield* accepted).toBe(before + 1)
    }).pipe(Effect.provide(orderApi())))

  it.scoped("answers 503 StoreUnavailable with Retry-After when the store fails, and wakes no relay", () => {
    const relay = relayDouble()
    return Effect.gen(function*() {
      const response = yield* postOrder(42)
      expect(response.status).toBe(503)
      expect(response.headers["retry-after"]).toBe("1")
      expect(yield* jsonOf(response)).toEqual({
        _tag: "StoreUnavailable",
        message: "The order store is unavailable; nothing was stored. Retry later"
      })
      expect(relay.state.commits).toBe(0)
    }).pipe(Effect.provide(orderApi({ store: failingOrderStore(), relay })))
  })

  it.scoped("answers 503 when the command cannot be stored: the order, its command and its key are rolled back", () => {
    // The first order's command is refused by the database itself, inside the order's transaction.
    let refusals = 1
    const store = sqliteOrderStoreWith((real, sql) => ({
      createOrder: (input) =>
        refusals-- > 0
          ? sql`CREATE TRIGGER refuse_commands BEFORE INSERT ON outbox BEGIN SELECT RAISE(ABORT, 'disk full'); END`.pipe(
            Effect.orDie,
            Effect.zipRight(real.createOrder(input)),
            Effect.ensuring(Effect.orDie(sql`DROP TRIGGER refuse_commands`))
          )
          : real.createOrder(input)
    }))
    const relay = relayDouble()
    return Effect.gen(function*() {
      const refused = yield* answerOf(postOrder(42, "key-1"))
      expect(refused).toEqual({ status: 503, body: expect.objectContaining({ _tag: "StoreUnavailable" }) })
      expect(yield* storedOrders(42)).toEqual([])
      expect(yield* outboxPending).toBe(0)
      expect(relay.state.commits).toBe(0)

      // The key was not kept either: the same request now creates the order.
      const accepted = yield* postOrder(42, "key-1")
      expect(accepted.status).toBe(201)
      expect(accepted.headers["idempotent-replayed"]).toBeUndefined()
      expect(yield* storedOrders(42)).toHaveLength(1)
      expect(yield* outboxPending).toBe(1)
    }).pipe(Effect.provide(orderApi({ store, relay })))
  })

  it.scoped("answers 503 OutboxFull once OUTBOX_MAX_PENDING commands wait, storing nothing, and accepts again once they leave", () => {
    const relay = relayDouble()
    return Effect.gen(function*() {
      expect((yield* postOrder(42)).status).toBe(201)
      expect((yield* postOrder(42)).status).toBe(201)
      const refused = yield* postOrder(42)
      expect(refused.status).toBe(503)
      expect(refused.headers["retry-after"]).toBe("1")
      expect(yield* jsonOf(refused)).toEqual({
        _tag: "OutboxFull",
        message: "2 commands already wait for the broker; nothing was stored. Retry later"
      })
      expect(yield* storedOrders(42)).toHaveLength(2)
      expect(yield* outboxPending).toBe(2)
      expect(relay.state.commits).toBe(2)

      relay.state.pending = 1 // the broker confirmed one
      expect((yield* postOrder(42)).status).toBe(201)
      expect(yield* storedOrders(42)).toHaveLength(3)
    }).pipe(Effect.provide(orderApi({ relay, env: { OUTBOX_MAX_PENDING: "2" } })))
  })

  it.scoped("while OUTBOX_MAX_PENDING commands wait, still answers a replay with its first answer, and refuses a new key without keeping it", () => {
    const relay = relayDouble()
    return Effect.gen(function*() {
      const first = yield* postOrder(42, "kept")
      const firstBody = yield* jsonOf(first)
      relay.state.pending = 1 // the limit below: the outbox is full now
      const replayed = yield* postOrder(42, "kept")
      expect(replayed.status).toBe(201)
      expect(replayed.headers["idempotent-replayed"]).toBe("true")
      expect((yield* jsonOf(replayed)).order.orderId).toBe(firstBody.order.orderId)

      const refused = yield* postOrder(42, "new")
      expect(refused.status).toBe(503)
      expect((yield* jsonOf(refused))._tag).toBe("OutboxFull")
      expect(yield* storedOrders(42)).toHaveLength(1)

      // The refused key was rolled back with its order: once there is room, it makes the order.
      relay.state.pending = 0
      const later = yield* postOrder(42, "new")
      expect(later.status).toBe(201)
      expect(later.headers["idempotent-replayed"]).toBeUndefined()
      expect(yield* storedOrders(42)).toHaveLength(2)
    }).pipe(Effect.provide(orderApi({ relay, env: { OUTBOX_MAX_PENDING: "1" } })))
  })

  it.scoped("answers 201 while the broker is down: the order waits in the outbox", () => {
    const relay = relayDouble({ brokerUp: false })
    return Effect.gen(function*() {
      expect((yield* postOrder(42)).status).toBe(201)
      expect(yield* outboxPending).toBe(1)
    }).pipe(Effect.provide(orderApi({ relay })))
  })

  it.scoped("answers 500 with a JSON body, no stack trace, when the store has a bug", () =>
    Effect.gen(function*() {
      const response = yield* postOrder(42)
      expect(response.status).toBe(500)
      const text = yield* response.text
      expect(JSON.parse(text)).toEqual({ _tag: "InternalServerError", message: "Internal server error" })
      expect(text).not.toContain("boom")
    }).pipe(
      Effect.provide(orderApi({ store: failingOrderStore(undefined, { createOrder: () => Effect.die(new Error("boom at line 12")) }) }))
    ))
})

describe("POST /orders with an Idempotency-Key", () => {
  it.scoped("answers a repeat with the first answer, marked Idempotent-Replayed, storing no second order", () => {
    const relay = relayDouble()
    return Effect.gen(function*() {
      const first = yield* postOrder(42, "order-2025-06-01/abc")
      expect(first.status).toBe(201)
      expect(first.headers["idempotent-replayed"]).toBeUndefined()
      const firstBody = yield* jsonOf(first)

      // The same request formatted otherwise is the same request.
      const again = yield* post("{ \"userId\" : 42 }", { "idempotency-key": "order-2025-06-01/abc" })
      expect(again.status).toBe(201)
      expect(again.headers["idempotent-replayed"]).toBe("true")
      expect(again.headers["location"]).toBe(first.headers["location"])
      expect(yield* jsonOf(again)).toEqual(firstBody)

      expect((yield* storedOrders(42)).map((order) => order.orderId)).toEqual([firstBody.order.orderId])
      expect(yield* outboxPending).toBe(1)
      expect(relay.state.commits).toBe(1)
    }).pipe(Effect.provide(orderApi({ relay })))
  })

  it.scoped("answers the same key with another body 422 IdempotencyKeyReused, storing nothing", () =>
    Effect.gen(function*() {
      expect((yield* postOrder(42, "k")).status).toBe(201)
      const reused = yield* answerOf(postOrder(43, "k"))
      expect(reused).toEqual({
        status: 422,
        body: {
          _tag: "IdempotencyKeyReused",
          key: "k",
          message: "The Idempotency-Key \"k\" was already used with a different request"
        }
      })
      expect(yield* storedOrders(43)).toEqual([])
      expect(yield* outboxPending).toBe(1)
    }).pipe(Effect.provide(orderApi())))

  it.scoped("tells requests with different keys apart, and keyed from unkeyed ones", () =>
    Effect.gen(function*() {
      const ids = yield* Effect.forEach(["a", "b", undefined, undefined], (key) =>
        Effect.map(answerOf(postOrder(42, key)), (answer) => answer.body.order.orderId))
      expect(new Set(ids).size).toBe(4)
      expect(yield* storedOrders(42)).toHaveLength(4)
    }).pipe(Effect.provide(orderApi())))

  it.scoped("creates one order for concurrent requests with one key", () =>
    Effect.gen(function*() {
      const responses = yield* Effect.all(Array.from({ length: 10 }, () => postOrder(42, "once")), { concurrency: "unbounded" })
      expect(responses.map((response) => response.status)).toEqual(Array(10).fill(201))
      const bodies = yield* Effect.forEach(responses, jsonOf)
      expect(new Set(bodies.map((body) => body.order.orderId)).size).toBe(1)
      expect(responses.filter((response) => response.headers["idempotent-replayed"] === "true")).toHaveLength(9)
      expect(yield* storedOrders(42)).toHaveLength(1)
      expect(yield* outboxPending).toBe(1)
    }).pipe(Effect.provide(orderApi())))

  it.scoped("accepts a key of 1 to 255 visible ASCII characters", () =>
    Effect.gen(function*() {
      for (const key of ["x", "~!\"#$%&'()*+,-./:;<=>?@[\\]^_`{|}", "k".repeat(255)]) {
        expect((yield* postOrder(42, key)).status).toBe(201)
      }
      expect(yield* storedOrders(42)).toHaveLength(3)
    }).pipe(Effect.provide(orderApi())))

  const malformedKeys: ReadonlyArray<[string, string]> = [
    ["an empty key", ""],
    ["a key of 256 characters", "k".repeat(256)],
    ["a key with a space", "two words"],
    ["a key with a tab", "a\tb"],
    ["a key that is not ASCII", "clé"]
  ]
  for (const [what, key] of malformedKeys) {
    it.scoped(`answers 400 for ${what}, storing nothing`, () =>
      Effect.gen(function*() {
        const { body, status } = yield* answerOf(postOrder(42, key))
        expect(status).toBe(400)
        expect(body._tag).toBe("HttpApiDecodeError")
        expect(body.message).toMatch(/^idempotency-key: Expected 1 to 255 visible ASCII characters, actual /)
        expect(String(body.message)).not.toContain("\n")
        expect(yield* outboxPending).toBe(0)
      }).pipe(Effect.provide(orderApi())))
  }
})

describe("GET /orders/:orderId", () => {
  it.scoped("answers the order as it was created, whatever the case of the id", () =>
    Effect.gen(function*() {
      const created = (yield* answerOf(postOrder(42))).body.order
      expect(yield* answerOf(get(`/orders/${created.orderId}`))).toEqual({ status: 200, body: created })
      expect(yield* answerOf(get(`/orders/${String(created.orderId).toUpperCase()}`))).toEqual({ status: 200, body: created })
    }).pipe(Effect.provide(orderApi())))

  it.scoped("answers 404 OrderNotFound for an unknown id", () =>
    Effect.gen(function*() {
      const unknown = "0190a2b4-8c1d-7e2f-9a3b-4c5d6e7f8091"
      expect(yield* answerOf(get(`/orders/${unknown}`))).toEqual({
        status: 404,
        body: { _tag: "OrderNotFound", message: `No order ${unknown}` }
      })
    }).pipe(Effect.provide(orderApi())))

  it.scoped("answers 400 for an id that is not a UUID", () =>
    Effect.gen(function*() {
      for (const id of ["42", "not-a-uuid", "0190a2b4-8c1d-7e2f-9a3b-4c5d6e7f809"]) {
        const { body, status } = yield* answerOf(get(`/orders/${id}`))
        expect(status).toBe(400)
        expect(body._tag).toBe("HttpApiDecodeError")
        expect(body.message).toMatch(/^orderId: /)
        expect(String(body.message)).not.toContain("\n")
      }
    }).pipe(Effect.provide(orderApi())))

  it.scoped("answers 503 StoreUnavailable with Retry-After when the store fails", () =>
    Effect.gen(function*() {
      const response = yield* get("/orders/0190a2b4-8c1d-7e2f-9a3b-4c5d6e7f8091")
      expect(response.status).toBe(503)
      expect(response.headers["retry-after"]).toBe("1")
      expect(yield* jsonOf(response)).toEqual({ _tag: "StoreUnavailable", message: "The order store is unavailable. Retry later" })
    }).pipe(Effect.provide(orderApi({ store: failingOrderStore() }))))
})

describe("GET /orders?userId=", () => {
  /** Creates `count` orders for `userId`, each a millisecond after the previous; their ids, oldest first. */
  const createOrders = (userId: number, count: number, from: number) =>
    Effect.forEach(Array.from({ length: count }, (_, i) => i), (i) =>
      Effect.suspend(() => {
        // Order ids carry the wall clock's millisecond; one each keeps their order that of creation.
        vi.setSystemTime(from + i)
        return Effect.map(answerOf(postOrder(userId)), (answer) => answer.body.order.orderId as string)
      })).pipe(Effect.ensuring(Effect.sync(() => vi.useRealTimers())))

  const list = (query: string) => answerOf(get(`/orders?${query}`))

  it.scoped("lists the user's orders newest first, a page at a time", () =>
    Effect.gen(function*() {
      const ids = yield* createOrders(7, 5, T0)
      yield* createOrders(8, 1, T0 + 100)
      const newestFirst = [...ids].reverse()

      const first = yield* list("userId=7&limit=2")
      expect(first.status).toBe(200)
      expect(first.body.orders.map((order: { orderId: string }) => order.orderId)).toEqual(newestFirst.slice(0, 2))
      expect(first.body.orders[0]).toEqual((yield* answerOf(get(`/orders/${newestFirst[0]}`))).body)
      expect(first.body.next).toEqual(expect.any(String))

      const second = yield* list(`userId=7&limit=2&cursor=${first.body.next}`)
      expect(second.body.orders.map((order: { orderId: string }) => order.orderId)).toEqual(newestFirst.slice(2, 4))
      const last = yield* list(`userId=7&limit=2&cursor=${second.body.next}`)
      expect(last.body).toEqual({ orders: [expect.objectContaining({ orderId: newestFirst[4] })], next: null })
    }).pipe(Effect.provide(orderApi())))

  it.scoped("gives no next cursor when the page is exactly the rest, and an empty list for a user without orders", () =>
    Effect.gen(function*() {
      yield* createOrders(7, 3, T0)
      expect((yield* list("userId=7&limit=3")).body.next).toBeNull()
      expect(yield* list("userId=9")).toEqual({ status: 200, body: { orders: [], next: null } })
    }).pipe(Effect.provide(orderApi())))

  it.scoped("answers 20 orders by default, and up to 100", () =>
    Effect.gen(function*() {
      yield* createOrders(7, 101, T0)
      const byDefault = yield* list("userId=7")
      expect(byDefault.body.orders).toHaveLength(20)
      expect(byDefault.body.next).toEqual(expect.any(String))
      const most = yield* list("userId=7&limit=100")
      expect(most.body.orders).toHaveLength(100)
      expect(most.body.next).toEqual(expect.any(String))
    }).pipe(Effect.provide(orderApi())))

  const badQueries: ReadonlyArray<[string, string, string]> = [
    ["no userId", "limit=5", "userId"],
    ["a userId that is not a number", "userId=abc", "userId"],
    ["a userId of 0", "userId=0", "userId"],
    ["a negative userId", "userId=-3", "userId"],
    ["a limit of 0", "userId=7&limit=0", "limit"],
    ["a limit of 101", "userId=7&limit=101", "limit"],
    ["a limit that is not a number", "userId=7&limit=ten", "limit"],
    ["a fractional limit", "userId=7&limit=1.5", "limit"],
    ["a garbage cursor", "userId=7&cursor=%%%", "cursor"],
    ["a cursor that is not an order id", `userId=7&cursor=${Buffer.from("hello").toString("base64url")}`, "cursor"]
  ]
  for (const [what, query, parameter] of badQueries) {
    it.scoped(`answers 400 for ${what}, naming the parameter in one line`, () =>
      Effect.gen(function*() {
        const { body, status } = yield* list(query)
        expect(status).toBe(400)
        expect(body._tag).toBe("HttpApiDecodeError")
        expect(body.message).toMatch(new RegExp(`^${parameter}: `))
        expect(String(body.message)).not.toContain("\n")
      }).pipe(Effect.provide(orderApi())))
  }
})

describe("other routes", () => {
  it.scoped("answers 404 with a JSON body for unknown paths and methods", () =>
    Effect.gen(function*() {
      for (
        const request of [
          HttpClientRequest.get("/nope"),
          HttpClientRequest.del("/orders"),
          HttpClientRequest.put("/orders/0190a2b4-8c1d-7e2f-9a3b-4c5d6e7f8091"),
          HttpClientRequest.post("/health/ready")
        ]
      ) {
        const response = yield* HttpClient.execute(request)
        expect(response.status).toBe(404)
        expect((yield* jsonOf(response))._tag).toBe("NotFound")
      }
    }).pipe(Effect.provide(orderApi())))

  it.scoped("reports ready while the store answers, whatever the broker does, with the outbox's backlog", () => {
    const relay = relayDouble({ pending: 120, oldestSeconds: 4.2 })
    return Effect.gen(function*() {
      expect(yield* answerOf(get("/health/ready"))).toEqual({
        status: 200,
        body: { store: "up", broker: "up", outbox: { pending: 120, oldestSeconds: 4.2 } }
      })
      relay.state.brokerUp = false
      expect(yield* answerOf(get("/health/ready"))).toEqual({
        status: 200,
        body: { store: "up", broker: "down", outbox: { pending: 120, oldestSeconds: 4.2 } }
      })
      expect(yield* answerOf(get("/health/live"))).toEqual({ status: 200, body: { status: "ok" } })
    }).pipe(Effect.provide(orderApi({ relay })))
  })

  it.scoped("reports not ready (503 NotReady, Retry-After, the same fields) while the store does not answer", () => {
    const relay = relayDouble({ pending: 3, oldestSeconds: 1.5 })
    return Effect.gen(function*() {
      const response = yield* get("/health/ready")
      expect(response.status).toBe(503)
      expect(response.headers["retry-after"]).toBe("1")
      expect(yield* jsonOf(response)).toEqual({
        _tag: "NotReady",
        message: "The order store does not answer",
        store: "down",
        broker: "up",
        outbox: { pending: 3, oldestSeconds: 1.5 }
      })
      expect((yield* get("/health/live")).status).toBe(200)
    }).pipe(Effect.provide(orderApi({ store: failingOrderStore(), relay })))
  })

  it.scoped("calls a store that does not answer within 2 seconds down", () =>
    Effect.gen(function*() {
      const pinged = yield* Deferred.make<void>()
      const store = failingOrderStore(undefined, { ping: Effect.zipRight(Deferred.succeed(pinged, undefined), Effect.never) })
      yield* Effect.gen(function*() {
        const answer = yield* Effect.fork(answerOf(get("/health/ready")))
        yield* Deferred.await(pinged)
        yield* TestClock.adjust("2 seconds")
        const { body, status } = yield* Fiber.join(answer)
        expect(status).toBe(503)
        expect(body).toMatchObject({ _tag: "NotReady", store: "down" })
      }).pipe(Effect.provide(orderApi({ store })))
    }))

  it.scoped("serves the API documentation and its OpenAPI document", () =>
    Effect.gen(function*() {
      const docs = yield* get("/docs")
      expect(docs.status).toBe(200)
      expect(docs.headers["content-type"]).toContain("text/html")
      const spec = yield* answerOf(get("/openapi.json"))
      expect(spec.status).toBe(200)
      expect(Object.keys(spec.body.paths)).toEqual(
        expect.arrayContaining(["/orders", "/orders/{orderId}", "/health/live", "/health/ready"])
      )
      expect(Object.keys(spec.body.paths["/orders"].post.responses)).toEqual(
        expect.arrayContaining(["201", "400", "413", "422", "503"])
      )
    }).pipe(Effect.provide(orderApi())))
})

/** A client connection that has had its answer and stays open, idle, as keep-alive clients leave it. */
const idleConnection = (port: number) =>
  Effect.acquireRelease(
    Effect.async<{ readonly socket: Socket; readonly answer: string; readonly closed: Promise<void> }, Error>((resume) => {
      const socket = connect(port, "127.0.0.1")
      const closed = new Promise<void>((resolve) => socket.once("close", () => resolve()))
      socket.once("error", (error) => resume(Effect.fail(error)))
      socket.once("data", (chunk) => resume(Effect.succeed({ socket, answer: chunk.toString("latin1"), closed })))
      socket.write("GET /health/live HTTP/1.1\r\nhost: localhost\r\n\r\n")
    }),
    ({ socket }) => Effect.sync(() => socket.destroy())
  )

describe("HttpLive at shutdown", () => {
  it.scopedLive("answers a request in flight, with connection: close, and closes idle keep-alive connections", () =>
    Effect.gen(function*() {
      const creating = yield* Deferred.make<void>()
      const commit = yield* Deferred.make<void>()
      // The store holds the order's transaction until the test lets it commit.
      const store = sqliteOrderStoreWith((real) => ({
        createOrder: (input) =>
          Deferred.succeed(creating, undefined).pipe(Effect.zipRight(Deferred.await(commit)), Effect.zipRight(real.createOrder(input)))
      }))
      const port = yield* freePort
      // The service in a scope of its own, which the test closes as SIGTERM would; the clients apart.
      const scope = yield* Scope.make()
      yield* Layer.buildWithScope(orderServiceOn(port, store), scope)
      const idle = yield* idleConnection(port)
      expect(idle.answer).toMatch(/^HTTP\/1\.1 200 /)
      expect(idle.answer.toLowerCase()).toContain("connection: keep-alive")

      const keepAlive = clientOf(port, { keepAlive: true })
      const answer = yield* postOrder(42).pipe(Effect.scoped, Effect.provide(keepAlive), Effect.fork)
      yield* Deferred.await(creating)
      const shutdown = yield* Effect.fork(Scope.close(scope, Exit.void))
      // The drain has begun once the idle connection is closed; it waits for the request in flight.
      yield* Effect.promise(() => idle.closed)
      expect(shutdown.unsafePoll()).toBeNull()

      yield* Deferred.succeed(commit, undefined)
      const response = yield* Fiber.join(answer)
      expect(response.status).toBe(201)
      expect(response.headers["connection"]).toBe("close")
      yield* Fiber.join(shutdown)

      // Stopped listening: a client's next request is refused, not left waiting.
      const after = yield* postOrder(42).pipe(Effect.scoped, Effect.provide(keepAlive), Effect.either)
      expect(Either.isLeft(after)).toBe(true)
    }))

  it.scopedLive("shuts down at once when nothing is in flight: idle keep-alive connections do not hold it", () =>
    Effect.gen(function*() {
      const port = yield* freePort
      const scope = yield* Scope.make()
      // A drain that waited for idle connections would wait SHUTDOWN_TIMEOUT_MS (an hour here).
      yield* Layer.buildWithScope(orderServiceOn(port, sqliteOrderStore, { SHUTDOWN_TIMEOUT_MS: "3600000" }), scope)
      const idle = yield* Effect.all([idleConnection(port), idleConnection(port)])
      for (const connection of idle) expect(connection.answer).toMatch(/^HTTP\/1\.1 200 /)
      const shutdown = yield* Effect.fork(Scope.close(scope, Exit.void))
      const closed = yield* Fiber.await(shutdown).pipe(Effect.timeout("5 seconds"), Effect.either)
      expect(Either.isRight(closed)).toBe(true)
      yield* Effect.promise(() => Promise.all(idle.map((connection) => connection.closed)))
    }))

  it.scopedLive("is not held by a request whose oversized chunked body made the platform drop it", () =>
    Effect.gen(function*() {
      const port = yield* freePort
      const scope = yield* Scope.make()
      yield* Layer.buildWithScope(orderServiceOn(port, sqliteOrderStore, { SHUTDOWN_TIMEOUT_MS: "3600000" }), scope)
      // 80 KiB in 8 KiB chunks, no content-length: the platform resets the connection past 64 KiB.
      yield* Effect.promise(() =>
        new Promise<void>((resolve) => {
          const socket = connect(port, "127.0.0.1", () => {
            socket.write("POST /orders HTTP/1.1\r\nhost: localhost\r\ncontent-type: application/json\r\ntransfer-encoding: chunked\r\n\r\n")
            for (let i = 0; i < 10; i++) socket.write(`2000\r\n${"a".repeat(8192)}\r\n`)
          })
          socket.on("error", () => undefined)
          socket.on("close", () => resolve())
        })
      )
      // Counted on Node's response, the dropped request is over: the drain does not wait the hour.
      const closed = yield* Scope.close(scope, Exit.void).pipe(Effect.timeout("5 seconds"), Effect.either)
      expect(Either.isRight(closed)).toBe(true)
    }))
})
