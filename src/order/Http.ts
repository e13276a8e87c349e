import { HttpApiBuilder, HttpApp, HttpServerResponse } from "@effect/platform"
import { Config, Effect, Layer, Option } from "effect"
import { MetricsRoute, ORDER_METRICS } from "../observability/Metrics"
import { serveGracefully } from "../runtime/GracefulHttpServer"
import { live } from "../runtime/Health"
import { answerEveryErrorWithJson } from "../runtime/HttpErrors"
import { AuthenticationLive } from "./Authentication"
import { DocsLive } from "./Docs"
import { NotReady, OrderApi, OrderCreated, OrderList, OrderView, Readiness } from "./OrderApi"
import { OrderConfig } from "./OrderConfig"
import { Orders } from "./Orders"
import { OutboxRelay } from "./OutboxRelay"
import { OrderStore } from "./store/OrderStore"

/** Headers added to the answer the handler returns (the success schema carries only the body). */
const withResponseHeaders = (headers: Record<string, string>) =>
  HttpApp.appendPreResponseHandler((_, response) => Effect.succeed(HttpServerResponse.setHeaders(response, headers)))

const OrdersHandlers = HttpApiBuilder.group(OrderApi, "orders", (handlers) =>
  Effect.gen(function*() {
    const orders = yield* Orders
    return handlers
      .handle("createOrder", ({ headers, payload }) =>
        orders.create(payload.userId, Option.fromNullable(headers["idempotency-key"])).pipe(
          Effect.tap(({ order, replayed }) =>
            withResponseHeaders({
              location: `/orders/${order.orderId}`,
              ...(replayed ? { "idempotent-replayed": "true" } : {})
            })
          ),
          // Not validated on construction (nor is fromRecord's view): the store made it, and the success schema encodes it on the way out.
          Effect.map(({ order }) => new OrderCreated({ message: "Order created", order: OrderView.fromRecord(order) }, true))
        ))
      .handle("getOrder", ({ path }) => Effect.map(orders.find(path.orderId), OrderView.fromRecord))
      .handle("listOrders", ({ urlParams }) =>
        orders.list(urlParams.userId, urlParams.limit ?? 20, Option.fromNullable(urlParams.cursor)).pipe(
          Effect.map(({ next, orders }) =>
            new OrderList({ orders: orders.map(OrderView.fromRecord), next: Option.getOrNull(next) })
          )
        ))
  }))

/** How long readiness waits for the store to answer before calling it down. */
const STORE_PING_TIMEOUT = "2 seconds"

const HealthHandlers = HttpApiBuilder.group(OrderApi, "health", (handlers) =>
  Effect.gen(function*() {
    const store = yield* OrderStore
    const relay = yield* OutboxRelay
    const storeUp = store.ping.pipe(Effect.timeout(STORE_PING_TIMEOUT), Effect.as(true), Effect.orElseSucceed(() => false))
    const ready = Effect.gen(function*() {
      const [storeIsUp, brokerIsUp] = yield* Effect.all([storeUp, relay.brokerReady], { concurrency: "unbounded" })
      const report = {
        store: storeIsUp ? "up" : "down",
        broker: brokerIsUp ? "up" : "down",
        outbox: relay.backlog()
      } as const
      // A broker that is down does not stop orders being accepted: they wait in the outbox.
      return storeIsUp
        ? new Readiness(report)
        : yield* new NotReady({ message: "The order store does not answer", ...report })
    })
    return handlers.handle("live", live).handle("ready", () => ready)
  }))

const ApiLive = HttpApiBuilder.api(OrderApi).pipe(
  Layer.provide([OrdersHandlers.pipe(Layer.provide(AuthenticationLive)), HealthHandlers])
)

/**
 * The order API's routes. Every route, `POST /orders` included, goes through the one `HttpApi`
 * pipeline: one definition of validation, docs, errors and tracing (its cost: docs/performance.md).
 */
export const HttpRoutes = HttpApiBuilder.serve().pipe(
  Layer.provide(HttpApiBuilder.middleware(answerEveryErrorWithJson)),
  // Beside the API: GET /docs, /openapi.json and /metrics.
  Layer.provide([DocsLive, MetricsRoute({ serviceName: "order-service", include: ORDER_METRICS })]),
  Layer.provide(ApiLive)
)

/** The order API on `PORT`. On shutdown, in-flight requests finish and are answered first. */
export const HttpLive = serveGracefully(HttpRoutes, Config.map(OrderConfig, ({ port }) => port))
