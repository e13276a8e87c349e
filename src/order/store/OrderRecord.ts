import { HttpApiSchema } from "@effect/platform"
import { Schema } from "effect"
import { OrderId, UserId } from "../../domain/Order"

/** What became of an order, in rank order: a status only ever moves to a later one. */
export const OrderStatus = Schema.Literal("accepted", "queued", "failed", "notified")
export type OrderStatus = typeof OrderStatus.Type

export const OrderFailure = Schema.Struct({
  reason: Schema.String,
  attempts: Schema.Int,
  failedAt: Schema.DateFromSelf
})
export interface OrderFailure extends Schema.Schema.Type<typeof OrderFailure> {}

/** An order as the store knows it. */
export const OrderRecord = Schema.Struct({
  orderId: OrderId,
  userId: UserId,
  status: OrderStatus,
  createdAt: Schema.DateFromSelf,
  updatedAt: Schema.DateFromSelf,
  queuedAt: Schema.OptionFromSelf(Schema.DateFromSelf),
  notifiedAt: Schema.OptionFromSelf(Schema.DateFromSelf),
  /** Distinct `NotificationSent` events received: more than 1 means it was sent more than once. */
  notifications: Schema.Int,
  failure: Schema.OptionFromSelf(OrderFailure)
})
export interface OrderRecord extends Schema.Schema.Type<typeof OrderRecord> {}

/** A command waiting in the outbox for the broker's confirm. */
export const OutboxEntry = Schema.Struct({
  orderId: OrderId,
  body: Schema.String,
  /** Message headers to publish with the command (trace context). */
  headers: Schema.UndefinedOr(Schema.Record({ key: Schema.String, value: Schema.String })),
  createdAt: Schema.DateFromSelf
})
export interface OutboxEntry extends Schema.Schema.Type<typeof OutboxEntry> {}

/** An `Idempotency-Key` repeated with a different request: nothing was stored. */
export class IdempotencyKeyReused extends Schema.TaggedError<IdempotencyKeyReused>()(
  "IdempotencyKeyReused",
  { message: Schema.String, key: Schema.String },
  HttpApiSchema.annotations({ status: 422, description: "The Idempotency-Key was already used with a different request" })
) {}
