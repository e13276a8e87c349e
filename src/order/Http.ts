import { HttpApiBuilder } from "@effect/platform"
import { Config, Effect, Layer } from "effect"
import { live, ready } from "../runtime/Health"
import { MetricsRoute, ORDER_METRICS } from "../observability/Metrics"
import { type RequestMiddleware, serveGracefully } from "../runtime/GracefulHttpServer"
import { answerEveryErrorWithJson } from "../runtime/HttpErrors"
import { CommandPublisher } from "./CommandPublisher"
import { CreateOrderFastPath } from "./CreateOrderFastPath"
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
    return handlers.handle("live", live).handle("ready", ready(publisher.isReady, "No open confirm channel to the broker"))
  }))

const ApiLive = HttpApiBuilder.api(OrderApi).pipe(Layer.provide([OrdersHandlers, HealthHandlers]))

/** The order API's routes; `trackRequests` lets the server drain them at shutdown. */
const routes = (trackRequests?: RequestMiddleware) =>
  HttpApiBuilder.serve(trackRequests).pipe(
    Layer.provide(HttpApiBuilder.middleware(answerEveryErrorWithJson)),
    // Beside the API: GET /docs, /openapi.json and /metrics.
    Layer.provide([DocsLive, MetricsRoute({ serviceName: "order-service", include: ORDER_METRICS })]),
    Layer.provide(ApiLive)
  )

/** The order API's routes on whichever `HttpServer` is provided (tests use `NodeHttpServer.layerTest`). */
export const HttpRoutes = routes()

/**
 * The order API on `PORT`, `POST /orders` through its fast path while tracing is off. On shutdown,
 * in-flight requests finish and are answered first.
 */
export const HttpLive = serveGracefully(routes, Config.map(OrderConfig, ({ port }) => port), CreateOrderFastPath)
