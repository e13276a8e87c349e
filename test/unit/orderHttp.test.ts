import { HttpClient, HttpClientRequest, type HttpClientResponse } from "@effect/platform"
import { NodeHttpClient, NodeHttpServer } from "@effect/platform-node"
import { describe, expect, it } from "@effect/vitest"
import { ConfigProvider, Deferred, Effect, Either, Exit, Fiber, Layer, Option, Scope, Stream } from "effect"
import { TracingLive } from "../../src/observability/Tracing"
import { CommandPublisher } from "../../src/order/CommandPublisher"
import { CreateOrderFastPath } from "../../src/order/CreateOrderFastPath"
import { BrokerUnavailable } from "../../src/order/Errors"
import { HttpLive, HttpRoutes } from "../../src/order/Http"
import { Orders } from "../../src/order/Orders"
import type { SendNotificationCommand } from "../../src/messaging/SendNotificationCommand"
import { sampleValue } from "../support/observability"
import { freePort } from "../support/processes"

/** The order API in memory: a real HTTP server on a random port, the publisher swapped for a double. */
const orderApiWith = (publisher: CommandPublisher["Type"]) =>
  HttpRoutes.pipe(
    Layer.provide(Orders.Default),
    Layer.provide(Layer.succeed(CommandPublisher, publisher)),
    Layer.provideMerge(NodeHttpServer.layerTest)
  )

/**
 * The order service's own HTTP server (`HttpLive`, tracing off as without an OTLP endpoint), so
 * `POST /orders` goes through its fast path, on `port`; the publisher is a double.
 */
const orderServiceOn = (port: number, publisher: CommandPublisher["Type"]) =>
  HttpLive.pipe(
    Layer.provide(Orders.Default),
    Layer.provide(Layer.succeed(CommandPublisher, publisher)),
    Layer.provide(TracingLive("order-service")),
    Layer.provide(Layer.setConfigProvider(ConfigProvider.fromMap(new Map([["PORT", String(port)]]))))
  )

const clientOf = (port: number, options: { readonly keepAlive: boolean } = { keepAlive: false }) =>
  Layer.effect(
    HttpClient.HttpClient,
    Effect.map(HttpClient.HttpClient, HttpClient.mapRequest(HttpClientRequest.prependUrl(`http://127.0.0.1:${port}`)))
  ).pipe(Layer.provide(NodeHttpClient.layerWithoutAgent), Layer.provide(NodeHttpClient.makeAgentLayer(options)))

const orderServiceWith = (publisher: CommandPublisher["Type"]) =>
  Layer.unwrapEffect(Effect.map(freePort, (port) => Layer.merge(orderServiceOn(port, publisher), clientOf(port))))

const recordingPublisher = () => {
  const published: Array<SendNotificationCommand> = []
  const publisher = CommandPublisher.of({
    publish: (command) => Effect.sync(() => void published.push(command)),
    isReady: Effect.succeed(true)
  })
  return { published, publisher }
}

const post = (body: string, headers: Record<string, string> = { "content-type": "application/json" }) =>
  HttpClientRequest.post("/orders").pipe(
    HttpClientRequest.setHeaders(headers),
    HttpClientRequest.bodyText(body, headers["content-type"]),
    HttpClient.execute
  )

const jsonOf = (response: HttpClientResponse.HttpClientResponse) =>
  Effect.map(response.json, (body) => body as Record<string, unknown>)

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

// The contract holds on both paths that can serve POST /orders.
const servers: ReadonlyArray<{
  readonly path: string
  readonly serve: (publisher: CommandPublisher["Type"]) => Layer.Layer<HttpClient.HttpClient, unknown>
  /**
   * The platform drops the connection, unanswered, when a chunked body passes its cap, and an
   * `HttpApi` middleware cannot answer first; the fast path reads the raw request and can.
   */
  readonly answersOversizedChunkedBody: boolean
}> = [
  { path: "the HttpApi route", serve: orderApiWith, answersOversizedChunkedBody: false },
  { path: "the fast path", serve: orderServiceWith, answersOversizedChunkedBody: true }
]
for (const { answersOversizedChunkedBody, path, serve } of servers) {
  describe(`POST /orders through ${path}`, () => {
    it.scoped("answers 201 with a UUIDv7 order id and publishes the same order", () => {
      const { published, publisher } = recordingPublisher()
      return Effect.gen(function*() {
        const response = yield* post(JSON.stringify({ userId: 42 }))
        expect(response.status).toBe(201)
        const body = yield* jsonOf(response)
        expect(body.message).toBe("Order created")
        const order = body.order as { orderId: string; userId: number }
        expect(order.userId).toBe(42)
        expect(order.orderId).toMatch(/^[0-9a-f]{8}-[0-9a-f]{4}-7[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/)
        expect(published.map((c) => ({ orderId: c.orderId, userId: c.userId }))).toEqual([order])
      }).pipe(Effect.provide(serve(publisher)))
    })

    for (const [what, body, tag] of badBodies) {
      it.scoped(`answers 400 ${tag} for ${what}, publishing nothing`, () => {
        const { published, publisher } = recordingPublisher()
        return Effect.gen(function*() {
          const response = yield* post(body)
          expect(response.status).toBe(400)
          const error = yield* jsonOf(response)
          expect(error._tag).toBe(tag)
          expect(typeof error.message).toBe("string")
          expect(String(error.message)).not.toContain("\n")
          expect(published).toEqual([])
        }).pipe(Effect.provide(serve(publisher)))
      })
    }

    it.scoped("names the field at fault in one line", () => {
      const { publisher } = recordingPublisher()
      return Effect.gen(function*() {
        const error = yield* post("{\"userId\":1.5}").pipe(Effect.flatMap(jsonOf))
        expect(error.message).toBe("userId: Expected an integer, actual 1.5")
        const negative = yield* post("{\"userId\":-1}").pipe(Effect.flatMap(jsonOf))
        expect(negative.message).toBe("userId: Expected a positive integer, actual -1")
      }).pipe(Effect.provide(serve(publisher)))
    })

    it.scoped("answers 413 for a body over 64 KiB", () => {
      const { published, publisher } = recordingPublisher()
      return Effect.gen(function*() {
        const response = yield* post(JSON.stringify({ userId: 1, padding: "x".repeat(64 * 1024) }))
        expect(response.status).toBe(413)
        expect((yield* jsonOf(response))._tag).toBe("PayloadTooLarge")
        expect(published).toEqual([])
      }).pipe(Effect.provide(serve(publisher)))
    })

    const chunkedOutcome = answersOversizedChunkedBody
      ? "answers 413 for a chunked body once it passes 64 KiB"
      : "cuts off a chunked body once it passes 64 KiB (the platform closes the connection), publishing nothing"
    it.scoped(chunkedOutcome, () => {
      const { published, publisher } = recordingPublisher()
      return Effect.gen(function*() {
        // No content-length: the size shows only while reading, 16 KiB at a time.
        const chunk = new TextEncoder().encode(" ".repeat(16 * 1024))
        const result = yield* HttpClientRequest.post("/orders").pipe(
          HttpClientRequest.bodyStream(Stream.make(new TextEncoder().encode("{\"userId\":1,\"padding\":\""), ...Array(5).fill(chunk)), {
            contentType: "application/json"
          }),
          HttpClient.execute,
          Effect.flatMap((response) => Effect.map(jsonOf(response), (body) => ({ status: response.status, body }))),
          Effect.either
        )
        if (answersOversizedChunkedBody) {
          expect(Either.getOrThrow(result)).toMatchObject({ status: 413, body: { _tag: "PayloadTooLarge" } })
        } else {
          expect(Either.isLeft(result)).toBe(true)
        }
        expect(published).toEqual([])
      }).pipe(Effect.provide(serve(publisher)))
    })

    it.scoped("accepts a body just under 64 KiB (the limit is the body, not the payload)", () => {
      const { publisher } = recordingPublisher()
      return Effect.gen(function*() {
        const body = JSON.stringify({ userId: 1, padding: "" })
        const padded = body.replace("\"\"", `"${"x".repeat(64 * 1024 - body.length)}"`)
        expect(Buffer.byteLength(padded)).toBe(64 * 1024)
        const response = yield* post(padded)
        expect(response.status).toBe(201)
      }).pipe(Effect.provide(serve(publisher)))
    })

    it.scoped("counts accepted orders in GET /metrics", () => {
      const { publisher } = recordingPublisher()
      return Effect.gen(function*() {
        const accepted = Effect.flatMap(HttpClient.get("/metrics"), (response) => response.text).pipe(
          Effect.map((text) => sampleValue(text, "orders_accepted_total") ?? 0)
        )
        const before = yield* accepted
        expect((yield* post(JSON.stringify({ userId: 7 }))).status).toBe(201)
        expect(yield* accepted).toBe(before + 1)
      }).pipe(Effect.provide(serve(publisher)))
    })

    it.scoped("answers 503 BrokerUnavailable with Retry-After when the broker does not confirm", () => {
      const publisher = CommandPublisher.of({
        publish: () => Effect.fail(new BrokerUnavailable({ message: "The broker did not confirm the command within 5s" })),
        isReady: Effect.succeed(false)
      })
      return Effect.gen(function*() {
        const response = yield* post(JSON.stringify({ userId: 42 }))
        expect(response.status).toBe(503)
        expect(response.headers["retry-after"]).toBe("1")
        expect(yield* jsonOf(response)).toEqual({
          _tag: "BrokerUnavailable",
          message: "The broker did not confirm the command within 5s"
        })
      }).pipe(Effect.provide(serve(publisher)))
    })

    it.scoped("answers 500 with a JSON body, no stack trace, when the publisher has a bug", () => {
      const publisher = CommandPublisher.of({ publish: () => Effect.die(new Error("boom at line 12")), isReady: Effect.succeed(true) })
      return Effect.gen(function*() {
        const response = yield* post(JSON.stringify({ userId: 42 }))
        expect(response.status).toBe(500)
        const body = yield* jsonOf(response)
        expect(body).toEqual({ _tag: "InternalServerError", message: "Internal server error" })
      }).pipe(Effect.provide(serve(publisher)))
    })
  })
}

describe("the fast path", () => {
  it.scoped("gives the same answer as the HttpApi route for every bad body", () => {
    const { publisher } = recordingPublisher()
    const answersOf = (serve: (typeof servers)[number]["serve"]) =>
      Effect.forEach(badBodies, ([, body]) =>
        post(body).pipe(Effect.flatMap((response) => Effect.map(response.json, (json) => [response.status, json]))))
        .pipe(Effect.scoped, Effect.provide(serve(publisher)))
    return Effect.gen(function*() {
      expect(yield* answersOf(orderServiceWith)).toEqual(yield* answersOf(orderApiWith))
    })
  })

  it.live("is drained at shutdown: a request in flight is answered, with connection: close", () =>
    Effect.gen(function*() {
      const publishing = yield* Deferred.make<void>()
      const confirm = yield* Deferred.make<void>()
      const publisher = CommandPublisher.of({
        publish: () => Deferred.succeed(publishing, undefined).pipe(Effect.zipRight(Deferred.await(confirm))),
        isReady: Effect.succeed(true)
      })
      const port = yield* freePort
      // The service in a scope of its own, which the test closes as SIGTERM would; the client apart,
      // keeping its connection alive unless told otherwise.
      const scope = yield* Scope.make()
      yield* Layer.buildWithScope(orderServiceOn(port, publisher), scope)
      const answer = yield* post(JSON.stringify({ userId: 42 })).pipe(Effect.scoped, Effect.provide(clientOf(port, { keepAlive: true })), Effect.fork)
      yield* Deferred.await(publishing)
      const shutdown = yield* Effect.fork(Scope.close(scope, Exit.void))
      yield* Effect.sleep("50 millis") // the drain has begun, and waits for the request
      expect(shutdown.unsafePoll()).toBeNull()
      yield* Deferred.succeed(confirm, undefined)
      const response = yield* Fiber.join(answer)
      expect(response.status).toBe(201)
      expect(response.headers["connection"]).toBe("close")
      yield* Fiber.join(shutdown)
    }))

  it.effect("serves only while tracing is off: with tracing on, the traced HttpApi route does", () => {
    const { publisher } = recordingPublisher()
    const fastPath = CreateOrderFastPath.pipe(
      Effect.provide(Orders.Default),
      Effect.provide(Layer.succeed(CommandPublisher, publisher))
    )
    return Effect.gen(function*() {
      expect(Option.isSome(yield* fastPath.pipe(Effect.provide(Layer.setTracerEnabled(false))))).toBe(true)
      expect(Option.isNone(yield* fastPath.pipe(Effect.provide(Layer.setTracerEnabled(true))))).toBe(true)
    })
  })
})

describe("other routes", () => {
  it.scoped("answers 404 with a JSON body for unknown paths and methods", () => {
    const { publisher } = recordingPublisher()
    return Effect.gen(function*() {
      for (const request of [HttpClientRequest.get("/nope"), HttpClientRequest.del("/orders"), HttpClientRequest.get("/orders")]) {
        const response = yield* HttpClient.execute(request)
        expect(response.status).toBe(404)
        expect((yield* jsonOf(response))._tag).toBe("NotFound")
      }
    }).pipe(Effect.provide(orderApiWith(publisher)))
  })

  it.scoped("reports ready only while the publisher has a confirm channel", () => {
    let ready = true
    const publisher = CommandPublisher.of({ publish: () => Effect.void, isReady: Effect.sync(() => ready) })
    return Effect.gen(function*() {
      expect((yield* HttpClient.get("/health/ready")).status).toBe(200)
      ready = false
      const notReady = yield* HttpClient.get("/health/ready")
      expect(notReady.status).toBe(503)
      expect((yield* jsonOf(notReady))._tag).toBe("NotReady")
      expect((yield* HttpClient.get("/health/live")).status).toBe(200)
    }).pipe(Effect.provide(orderApiWith(publisher)))
  })
})
