import { HttpApi, HttpApiEndpoint, HttpApiGroup, OpenApi } from "@effect/platform"
import { Schema } from "effect"
import { Order, UserId } from "../domain/Order"
import { HealthApi } from "../runtime/Health"
import { BrokerUnavailable, InternalServerError, MalformedRequest, NotFound, PayloadTooLarge } from "./Errors"

export const CreateOrderRequest = Schema.Struct({ userId: UserId })

export class OrderCreated extends Schema.Class<OrderCreated>("OrderCreated")({
  message: Schema.Literal("Order created"),
  order: Order
}) {}

export class OrdersApi extends HttpApiGroup.make("orders").add(
  HttpApiEndpoint.post("createOrder", "/orders")
    .setPayload(CreateOrderRequest)
    .addSuccess(OrderCreated, { status: 201 })
    .addError(BrokerUnavailable)
    .annotate(OpenApi.Summary, "Create an order")
    .annotate(
      OpenApi.Description,
      "Creates an order and answers once the broker has confirmed its SendNotificationCommand. " +
        "The notification itself is sent later, asynchronously."
    )
) {}

/** The order service's HTTP contract; handlers live in `Http.ts`, apart from it. */
export class OrderApi extends HttpApi.make("order-service")
  .add(OrdersApi)
  .add(HealthApi)
  .addError(MalformedRequest)
  .addError(PayloadTooLarge)
  .addError(NotFound)
  .addError(InternalServerError)
  .annotate(OpenApi.Title, "Order service")
{}
