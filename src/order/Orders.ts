import { Effect } from "effect"
import { makeOrderId, Order, type UserId } from "../domain/Order"
import { SendNotificationCommand } from "../messaging/SendNotificationCommand"
import { observePublish } from "../observability/Metrics"
import { CommandPublisher } from "./CommandPublisher"

/** Creates orders: each one is accepted only once its notification command is confirmed. */
export class Orders extends Effect.Service<Orders>()("order/Orders", {
  effect: Effect.gen(function*() {
    const publisher = yield* CommandPublisher
    // `Effect.suspend`, not `Effect.gen`: this runs once per request, and a generator per order
    // showed up in the benchmark's profiles.
    const create = (userId: UserId) =>
      Effect.suspend(() => {
        // Both fields are valid by construction (a fresh UUIDv7, a userId the API decoded), so the
        // classes skip re-checking them: validation happens once, at the boundary.
        const order = new Order({ orderId: makeOrderId(), userId }, true)
        return publisher.publish(new SendNotificationCommand(order, true)).pipe(observePublish, Effect.as(order))
      })
    return { create } as const
  })
}) {}
