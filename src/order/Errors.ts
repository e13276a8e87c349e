import { HttpApiSchema } from "@effect/platform"
import { Schema } from "effect"

/**
 * The order API's own error answers, each with the wire shape `{"_tag", "message"}` and its
 * status; the answers every route can give are in `runtime/HttpErrors.ts`, and
 * `IdempotencyKeyReused` beside the store that detects it.
 */

/** The order could not be committed (the store is unreachable or failing): nothing was stored. */
export class StoreUnavailable extends Schema.TaggedError<StoreUnavailable>()(
  "StoreUnavailable",
  { message: Schema.String },
  HttpApiSchema.annotations({ status: 503, description: "The order store did not commit the order; nothing was stored" })
) {}

/** OUTBOX_MAX_PENDING commands wait for the broker already: nothing was stored. */
export class OutboxFull extends Schema.TaggedError<OutboxFull>()(
  "OutboxFull",
  { message: Schema.String },
  HttpApiSchema.annotations({ status: 503, description: "Too many commands wait for the broker; nothing was stored" })
) {}

export class OrderNotFound extends Schema.TaggedError<OrderNotFound>()(
  "OrderNotFound",
  { message: Schema.String },
  HttpApiSchema.annotations({ status: 404, description: "No order has this id" })
) {}

/** `ORDER_API_TOKEN` is set and the request did not bring it as `Authorization: Bearer <token>`. */
export class Unauthorized extends Schema.TaggedError<Unauthorized>()(
  "Unauthorized",
  { message: Schema.String },
  HttpApiSchema.annotations({ status: 401, description: "No bearer token, or not the service's ORDER_API_TOKEN" })
) {}
