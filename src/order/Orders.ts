import { Effect } from "effect"
import { makeOrderId, Order, type UserId } from "../domain/Order"
import { SendNotificationCommand } from "../messaging/SendNotificationCommand"
import { observePublish } from "../observability/Metrics"
import { CommandPublisher } from "./CommandPublisher"

/** Creates orders: each one is accepted only once its notification command is confirmed. */
export class Orders extends Effect.Service<Orders>()("order/Orders", {
  effect: Effect.gen(function*() {
    const publisher = yield* CommandPublisher
    const create = (userId: UserId) =>
      Effect.gen(function*() {
        const order = new Order({ orderId: makeOrderId(), userId })
        yield* publisher.publish(new SendNotificationCommand(order)).pipe(
          observePublish,
          Effect.annotateLogs("orderId", order.orderId)
        )
        return order
      })
    return { create } as const
  })
}) {}
