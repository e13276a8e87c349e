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
        // Both fields are valid by construction (a fresh UUIDv7, a userId the API decoded), so the
        // classes skip re-checking them: validation happens once, at the boundary.
        const order = new Order({ orderId: makeOrderId(), userId }, true)
        yield* publisher.publish(new SendNotificationCommand(order, true)).pipe(
          observePublish,
          Effect.annotateLogs("orderId", order.orderId)
        )
        return order
      })
    return { create } as const
  })
}) {}
