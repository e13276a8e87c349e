import { Schema } from "effect"
import { uuidv7 } from "./uuidv7"

/** A user id as the API accepts it: a positive safe integer (no strings, fractions or 1e400). */
export const UserId = Schema.Int.pipe(
  Schema.positive(),
  Schema.brand("UserId"),
  // Also the schema's error message: "Expected a positive integer, actual -1".
  Schema.annotations({ description: "a positive integer" })
)
export type UserId = typeof UserId.Type

/**
 * Order ids are UUIDv7: time-ordered like the original `Date.now()` id, but unique across
 * concurrent requests and replicas, and usable as the message's idempotency key.
 */
export const OrderId = Schema.UUID.pipe(
  Schema.brand("OrderId"),
  Schema.annotations({ description: "UUIDv7 of the order (time-ordered)" })
)
export type OrderId = typeof OrderId.Type

// No need to check our own generator's output against the UUID pattern on every order.
export const makeOrderId = (): OrderId => OrderId.make(uuidv7(), true)

export class Order extends Schema.Class<Order>("Order")({
  orderId: OrderId,
  userId: UserId
}) {}
