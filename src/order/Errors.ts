import { HttpApiSchema } from "@effect/platform"
import { Schema } from "effect"

/**
 * The order API's error answers. Each has the wire shape `{"_tag", "message"}` and its status;
 * the handler fails with `BrokerUnavailable`, the HTTP layer answers the others itself.
 */

/** The broker did not take responsibility for the command: nothing was accepted, retry later. */
export class BrokerUnavailable extends Schema.TaggedError<BrokerUnavailable>()(
  "BrokerUnavailable",
  { message: Schema.String },
  HttpApiSchema.annotations({ status: 503, description: "The broker did not confirm the command in time; nothing was accepted" })
) {}

export class MalformedRequest extends Schema.TaggedError<MalformedRequest>()(
  "MalformedRequest",
  { message: Schema.String },
  HttpApiSchema.annotations({ status: 400, description: "The body is not JSON" })
) {}

export class PayloadTooLarge extends Schema.TaggedError<PayloadTooLarge>()(
  "PayloadTooLarge",
  { message: Schema.String },
  HttpApiSchema.annotations({ status: 413, description: "The body is over 64 KiB" })
) {}

export class NotFound extends Schema.TaggedError<NotFound>()(
  "NotFound",
  { message: Schema.String },
  HttpApiSchema.annotations({ status: 404 })
) {}

export class InternalServerError extends Schema.TaggedError<InternalServerError>()(
  "InternalServerError",
  { message: Schema.String },
  HttpApiSchema.annotations({ status: 500 })
) {}
