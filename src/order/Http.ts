import { HttpApiBuilder, HttpServer } from "@effect/platform"
import { NodeHttpServer } from "@effect/platform-node"
import { Effect, Layer } from "effect"
import { createServer } from "node:http"
import { Healthy, NotReady } from "../runtime/Health"
import { MetricsRoute, ORDER_METRICS } from "../observability/Metrics"
import { answerEveryErrorWithJson } from "../runtime/HttpErrors"
import { CommandPublisher } from "./CommandPublisher"
import { DocsLive } from "./Docs"
import { OrderApi, OrderCreated } from "./OrderApi"
import { OrderConfig } from "./OrderConfig"
import { Orders } from "./Orders"

const OrdersHandlers = HttpApiBuilder.group(OrderApi, "orders", (handlers) =>
  Effect.gen(function*() {
    const orders = yield* Orders
    return handlers.handle("createOrder", ({ payload }) =>
      orders.create(payload.userId).pipe(Effect.map((order) => new OrderCreated({ message: "Order created", order }))))
  }))

const HealthHandlers = HttpApiBuilder.group(OrderApi, "health", (handlers) =>
  Effect.gen(function*() {
    const publisher = yield* CommandPublisher
    return handlers
      .handle("live", () => Effect.succeed(new Healthy({ status: "ok" })))
      .handle("ready", () =>
        Effect.if(publisher.isReady, {
          onTrue: () => Effect.succeed(new Healthy({ status: "ok" })),
          onFalse: () => Effect.fail(new NotReady({ message: "No open confirm channel to the broker" }))
        }))
  }))

const ApiLive = HttpApiBuilder.api(OrderApi).pipe(Layer.provide([OrdersHandlers, HealthHandlers]))

const ServerLive = Layer.unwrapEffect(
  Effect.map(OrderConfig, ({ port }) => NodeHttpServer.layer(createServer, { port }))
)

/** The order API's routes on whichever `HttpServer` is provided (tests use `NodeHttpServer.layerTest`). */
export const HttpRoutes = HttpApiBuilder.serve().pipe(
  Layer.provide(HttpApiBuilder.middleware(answerEveryErrorWithJson)),
  // Beside the API: GET /docs, /openapi.json and /metrics.
  Layer.provide([DocsLive, MetricsRoute({ serviceName: "order-service", include: ORDER_METRICS })]),
  Layer.provide(ApiLive)
)

/** The order API on `PORT`. Closing its scope stops accepting and lets in-flight requests finish. */
export const HttpLive = HttpRoutes.pipe(HttpServer.withLogAddress, Layer.provide(ServerLive))
