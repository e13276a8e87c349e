import {
  HttpApi,
  HttpApiEndpoint,
  HttpApiGroup,
  HttpApiMiddleware,
  HttpApiSchema,
  HttpApiSecurity,
  OpenApi
} from "@effect/platform"
import { Option, ParseResult, Schema } from "effect"
import { OrderId, UserId } from "../domain/Order"
import { LiveEndpoint } from "../runtime/Health"
import { InternalServerError, MalformedRequest, NotFound, PayloadTooLarge } from "../runtime/HttpErrors"
import { OrderNotFound, OutboxFull, StoreUnavailable, Unauthorized } from "./Errors"
import { IdempotencyKeyReused, type OrderRecord, OrderStatus } from "./store/OrderRecord"

export const CreateOrderRequest = Schema.Struct({ userId: UserId })

/** 1 to 255 visible ASCII characters (contract §4). */
export const IdempotencyKey = Schema.String.pipe(
  Schema.pattern(/^[\x21-\x7e]{1,255}$/),
  Schema.annotations({ description: "1 to 255 visible ASCII characters" })
)

/** An order as the API shows it: times in ISO 8601 UTC, fields only when known. */
export class OrderView extends Schema.Class<OrderView>("OrderView")({
  orderId: OrderId,
  userId: UserId,
  status: OrderStatus,
  createdAt: Schema.Date,
  updatedAt: Schema.Date,
  notifications: Schema.Int.annotations({
    description: "Distinct NotificationSent events received: more than 1 means the notification was sent more than once"
  }),
  queuedAt: Schema.optionalWith(Schema.Date, { exact: true }),
  notifiedAt: Schema.optionalWith(Schema.Date, { exact: true }),
  failure: Schema.optionalWith(
    Schema.Struct({ reason: Schema.String, attempts: Schema.Int, failedAt: Schema.Date }),
    { exact: true }
  )
}) {
  static fromRecord(order: OrderRecord): OrderView {
    return new OrderView({
      orderId: order.orderId,
      userId: order.userId,
      status: order.status,
      createdAt: order.createdAt,
      updatedAt: order.updatedAt,
      notifications: order.notifications,
      ...Option.match(order.queuedAt, { onNone: () => ({}), onSome: (queuedAt) => ({ queuedAt }) }),
      ...Option.match(order.notifiedAt, { onNone: () => ({}), onSome: (notifiedAt) => ({ notifiedAt }) }),
      ...Option.match(order.failure, { onNone: () => ({}), onSome: (failure) => ({ failure }) })
    }, true)
  }
}

export class OrderCreated extends Schema.Class<OrderCreated>("OrderCreated")({
  message: Schema.Literal("Order created"),
  order: OrderView
}) {}

/** The list's cursor: the last order id of the page, opaque to clients (base64url). */
export const Cursor = Schema.transformOrFail(Schema.String, OrderId, {
  strict: true,
  decode: (cursor, _, ast) => {
    const orderId = Buffer.from(cursor, "base64url").toString("utf8")
    return Schema.is(OrderId)(orderId) && /^[A-Za-z0-9_-]+$/.test(cursor)
      ? ParseResult.succeed(orderId)
      : ParseResult.fail(new ParseResult.Type(ast, cursor, "not a cursor this API gave"))
  },
  encode: (orderId) => ParseResult.succeed(Buffer.from(orderId, "utf8").toString("base64url"))
}).annotations({ description: "the `next` of the previous page" })

const Limit = Schema.NumberFromString.pipe(
  Schema.int(),
  Schema.between(1, 100),
  Schema.annotations({ description: "an integer from 1 to 100" })
)

export class OrderList extends Schema.Class<OrderList>("OrderList")({
  orders: Schema.Array(OrderView),
  next: Schema.NullOr(Cursor)
}) {}

/**
 * `Authorization: Bearer <ORDER_API_TOKEN>` on every `/orders` route. The API is one static
 * definition, so its OpenAPI document declares the scheme whether or not the service has a token
 * (a client written against it works either way); without one, the service lets every request in.
 */
export class Authentication extends HttpApiMiddleware.Tag<Authentication>()("OrderApi/Authentication", {
  failure: Unauthorized,
  security: {
    bearer: HttpApiSecurity.bearer.pipe(
      HttpApiSecurity.annotate(OpenApi.Description, "ORDER_API_TOKEN, required when the service has one")
    )
  }
}) {}

export class OrdersApi extends HttpApiGroup.make("orders")
  .add(
    HttpApiEndpoint.post("createOrder", "/orders")
      .setPayload(CreateOrderRequest)
      .setHeaders(Schema.Struct({ "idempotency-key": Schema.optionalWith(IdempotencyKey, { exact: true }) }))
      .addSuccess(OrderCreated, { status: 201 })
      .addError(IdempotencyKeyReused)
      .addError(StoreUnavailable)
      .addError(OutboxFull)
      .annotate(OpenApi.Summary, "Create an order")
      .annotate(
        OpenApi.Description,
        "Stores the order and its SendNotificationCommand in one transaction and answers 201 with " +
          "`Location: /orders/{orderId}`; the command then reaches the broker at least once, even if the " +
          "broker is down right now. With an `Idempotency-Key`, a repeat of the same request gets the first " +
          "answer again (`Idempotent-Replayed: true`), and the same key with another body gets 422."
      )
  )
  .add(
    HttpApiEndpoint.get("getOrder", "/orders/:orderId")
      .setPath(Schema.Struct({ orderId: OrderId }))
      .addSuccess(OrderView)
      .addError(OrderNotFound)
      .addError(StoreUnavailable)
      .annotate(OpenApi.Summary, "What became of an order")
      .annotate(
        OpenApi.Description,
        "`status` only moves forward: accepted (stored, waiting in the outbox), queued (the broker has " +
          "the command), failed (dead-lettered; `failure` says why), notified."
      )
  )
  .add(
    HttpApiEndpoint.get("listOrders", "/orders")
      .setUrlParams(Schema.Struct({
        userId: Schema.NumberFromString.pipe(Schema.compose(UserId)),
        limit: Schema.optionalWith(Limit, { exact: true }),
        cursor: Schema.optionalWith(Cursor, { exact: true })
      }))
      .addSuccess(OrderList)
      .addError(StoreUnavailable)
      .annotate(OpenApi.Summary, "A user's orders, newest first")
  )
  .middleware(Authentication)
{}

/** What each dependency is doing (contract §4): 200 while orders can be accepted. */
const readinessFields = {
  store: Schema.Literal("up", "down"),
  broker: Schema.Literal("up", "down"),
  outbox: Schema.Struct({ pending: Schema.Int, oldestSeconds: Schema.Number })
}

export class Readiness extends Schema.Class<Readiness>("Readiness")(readinessFields) {}

export class NotReady extends Schema.TaggedError<NotReady>()(
  "NotReady",
  { message: Schema.String, ...readinessFields },
  HttpApiSchema.annotations({ status: 503, description: "The order store does not answer: orders cannot be accepted" })
) {}

export class OrderHealthApi extends HttpApiGroup.make("health")
  .add(LiveEndpoint)
  .add(HttpApiEndpoint.get("ready", "/health/ready").addSuccess(Readiness).addError(NotReady))
{}

/** The order service's HTTP contract; handlers live in `Http.ts`, apart from it. */
export class OrderApi extends HttpApi.make("order-service")
  .add(OrdersApi)
  .add(OrderHealthApi)
  .addError(MalformedRequest)
  .addError(PayloadTooLarge)
  .addError(NotFound)
  .addError(InternalServerError)
  .annotate(OpenApi.Title, "Order service")
{}
