/**
 * The framework's floor for `npm run bench:floor`: POST /orders answered 201 at once, with no store,
 * broker or middleware, by plain Node (`raw`), by `@effect/platform`'s `HttpRouter` (`router`), and
 * by an `HttpApi` with the project's request schema (`api`). `FLOOR_SERVER` picks one; `PORT` is its port.
 */
import { HttpApi, HttpApiBuilder, HttpApiEndpoint, HttpApiGroup, HttpRouter, HttpServer, HttpServerRequest, HttpServerResponse } from "@effect/platform"
import * as NodeHttpServer from "@effect/platform-node/NodeHttpServer"
import * as NodeRuntime from "@effect/platform-node/NodeRuntime"
import { Effect, Layer, Schema } from "effect"
import { createServer } from "node:http"
import { CreateOrderRequest } from "../../src/order/OrderApi"

const port = Number(process.env.PORT)
const answer = { message: "Order created" }

const Created = Schema.Struct({ message: Schema.String })
const FloorApi = HttpApi.make("floor").add(
  HttpApiGroup.make("orders").add(
    HttpApiEndpoint.post("createOrder", "/orders").setPayload(CreateOrderRequest).addSuccess(Created, { status: 201 })
  )
)
const ApiServer = HttpApiBuilder.serve().pipe(
  Layer.provide(HttpApiBuilder.api(FloorApi).pipe(
    Layer.provide(HttpApiBuilder.group(FloorApi, "orders", (handlers) => handlers.handle("createOrder", () => Effect.succeed(answer))))
  ))
)

const RouterServer = HttpRouter.empty.pipe(
  HttpRouter.post(
    "/orders",
    Effect.zipRight(HttpServerRequest.schemaBodyJson(CreateOrderRequest), HttpServerResponse.json(answer, { status: 201 }))
  ),
  HttpServer.serve()
)

const serveWith = <E>(server: Layer.Layer<never, E, Layer.Layer.Success<ReturnType<typeof NodeHttpServer.layer>>>) =>
  NodeRuntime.runMain(Layer.launch(server.pipe(Layer.provide(NodeHttpServer.layer(createServer, { port })))))

switch (process.env.FLOOR_SERVER) {
  case "raw":
    createServer((request, response) => {
      let body = ""
      request.on("data", (chunk: Buffer) => (body += chunk.toString("utf8")))
      request.on("end", () => {
        JSON.parse(body)
        response.writeHead(201, { "content-type": "application/json" })
        response.end(JSON.stringify(answer))
      })
    }).listen(port, () => console.log(`Listening on http://0.0.0.0:${port}`))
    break
  case "router":
    serveWith(RouterServer.pipe(HttpServer.withLogAddress))
    break
  case "api":
    serveWith(ApiServer.pipe(HttpServer.withLogAddress))
    break
  default:
    throw new Error("FLOOR_SERVER must be raw, router or api")
}
