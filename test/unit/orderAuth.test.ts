import { HttpClient, HttpClientRequest, type HttpClientResponse } from "@effect/platform"
import { describe, expect, it } from "@effect/vitest"
import { Effect, Option } from "effect"
import { UserId } from "../../src/domain/Order"
import { OrderStore } from "../../src/order/store/OrderStore"
import { orderApi } from "../support/orderDoubles"

const TOKEN = "tok-5b8f2c1e9a7d"
const withToken = { env: { ORDER_API_TOKEN: TOKEN } }

const ORDER_ID = "0190a2b4-8c1d-7e2f-9a3b-4c5d6e7f8091"

/** The three `/orders` routes, each as a request to which `headers` are added. */
const ordersRoutes: ReadonlyArray<[string, (headers: Record<string, string>) => HttpClientRequest.HttpClientRequest]> = [
  ["POST /orders", (headers) => HttpClientRequest.post("/orders").pipe(
    HttpClientRequest.setHeaders(headers),
    HttpClientRequest.bodyText(JSON.stringify({ userId: 42 }), "application/json")
  )],
  ["GET /orders/{id}", (headers) => HttpClientRequest.get(`/orders/${ORDER_ID}`).pipe(HttpClientRequest.setHeaders(headers))],
  ["GET /orders", (headers) => HttpClientRequest.get("/orders?userId=42").pipe(HttpClientRequest.setHeaders(headers))]
]

const answerOf = (request: HttpClientRequest.HttpClientRequest) =>
  Effect.flatMap(HttpClient.execute(request), (response: HttpClientResponse.HttpClientResponse) =>
    Effect.map(response.text, (text) => ({ status: response.status, headers: response.headers, text })))

const storedOrders = Effect.flatMap(OrderStore, (store) =>
  store.listOrders({ userId: UserId.make(42), limit: 10, before: Option.none() }))

const bearer = (token: string) => ({ authorization: `Bearer ${token}` })

describe("ORDER_API_TOKEN set", () => {
  for (const [route, request] of ordersRoutes) {
    it.scoped(`${route} without a token: 401 Unauthorized JSON with WWW-Authenticate: Bearer`, () =>
      Effect.gen(function*() {
        for (const headers of [{}, { authorization: "Basic dXNlcjpwYXNz" }, { authorization: "Bearer " }]) {
          const answer = yield* answerOf(request(headers))
          expect(answer.status).toBe(401)
          expect(answer.headers["www-authenticate"]).toBe("Bearer")
          expect(answer.headers["content-type"]).toContain("application/json")
          expect(JSON.parse(answer.text)).toEqual({ _tag: "Unauthorized", message: expect.any(String) })
          expect(answer.text).not.toContain(TOKEN)
        }
      }).pipe(Effect.provide(orderApi(withToken))))

    it.scoped(`${route} with a wrong token: 401 with error="invalid_token", neither token echoed`, () =>
      Effect.gen(function*() {
        // Shorter, longer, and the same length as the real one: none of them may get through, or crash the compare.
        for (const wrong of ["x", `${TOKEN}x`, TOKEN.replace(/.$/, "0"), TOKEN.toUpperCase()]) {
          const answer = yield* answerOf(request(bearer(wrong)))
          expect(answer.status).toBe(401)
          expect(answer.headers["www-authenticate"]).toBe("Bearer error=\"invalid_token\"")
          expect(JSON.parse(answer.text)).toEqual({ _tag: "Unauthorized", message: expect.any(String) })
          expect(answer.text).not.toContain(wrong)
          expect(answer.text).not.toContain(TOKEN)
        }
      }).pipe(Effect.provide(orderApi(withToken))))
  }

  it.scoped("a refused POST stores nothing, and is refused before its body is looked at", () =>
    Effect.gen(function*() {
      const badBody = HttpClientRequest.post("/orders").pipe(HttpClientRequest.bodyText("{\"userId\": ", "application/json"))
      expect((yield* answerOf(badBody)).status).toBe(401)
      expect((yield* answerOf(ordersRoutes[0]![1](bearer("wrong")))).status).toBe(401)
      expect(yield* storedOrders).toEqual([])
    }).pipe(Effect.provide(orderApi(withToken))))

  it.scoped("the right token gets the routes' own answers (the scheme's case does not matter)", () =>
    Effect.gen(function*() {
      const created = yield* answerOf(ordersRoutes[0]![1](bearer(TOKEN)))
      expect(created.status).toBe(201)
      expect(created.headers["www-authenticate"]).toBeUndefined()
      const orderId = JSON.parse(created.text).order.orderId as string
      const found = yield* answerOf(HttpClientRequest.get(`/orders/${orderId}`).pipe(HttpClientRequest.setHeaders(bearer(TOKEN))))
      expect(found.status).toBe(200)
      expect(JSON.parse(found.text).orderId).toBe(orderId)
      const list = yield* answerOf(ordersRoutes[2]![1]({ authorization: `bearer ${TOKEN}` }))
      expect(list.status).toBe(200)
      expect(JSON.parse(list.text).orders.map((order: { orderId: string }) => order.orderId)).toEqual([orderId])
      // Past the check, the routes' own errors as before.
      expect((yield* answerOf(ordersRoutes[1]![1](bearer(TOKEN)))).status).toBe(404)
    }).pipe(Effect.provide(orderApi(withToken))))

  it.scoped("health, metrics and docs stay open", () =>
    Effect.gen(function*() {
      for (const path of ["/health/live", "/health/ready", "/metrics", "/docs", "/openapi.json"]) {
        const answer = yield* answerOf(HttpClientRequest.get(path))
        expect(answer.status, path).toBe(200)
      }
      // An unknown route is still a 404, not a 401.
      expect((yield* answerOf(HttpClientRequest.get("/nope"))).status).toBe(404)
    }).pipe(Effect.provide(orderApi(withToken))))

  it.scoped("the OpenAPI document has a bearer scheme on the /orders operations only, and their 401", () =>
    Effect.gen(function*() {
      const spec = JSON.parse((yield* answerOf(HttpClientRequest.get("/openapi.json"))).text)
      expect(spec.components.securitySchemes.bearer).toMatchObject({ type: "http", scheme: "bearer" })
      for (const operation of [spec.paths["/orders"].post, spec.paths["/orders"].get, spec.paths["/orders/{orderId}"].get]) {
        expect(operation.security).toEqual([{ bearer: [] }])
        expect(Object.keys(operation.responses)).toContain("401")
      }
      for (const operation of [spec.paths["/health/live"].get, spec.paths["/health/ready"].get]) {
        expect(operation.security ?? []).toEqual([])
      }
      expect(spec.security ?? []).toEqual([])
    }).pipe(Effect.provide(orderApi(withToken))))
})

describe("ORDER_API_TOKEN unset", () => {
  it.scoped("every request gets in, with or without a token; the document still declares the scheme", () =>
    Effect.gen(function*() {
      for (const headers of [{}, bearer("anything")]) {
        expect((yield* answerOf(ordersRoutes[0]![1](headers))).status).toBe(201)
        expect((yield* answerOf(ordersRoutes[2]![1](headers))).status).toBe(200)
      }
      const spec = JSON.parse((yield* answerOf(HttpClientRequest.get("/openapi.json"))).text)
      expect(spec.paths["/orders"].post.security).toEqual([{ bearer: [] }])
    }).pipe(Effect.provide(orderApi())))
})
