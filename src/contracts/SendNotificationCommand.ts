import type * as amqp from "amqplib"
import { Either, ParseResult, Schema } from "effect"
import { OrderId, UserId } from "../domain/Order"
import { decodeOrReason, describeIssues } from "../runtime/describe"

/**
 * The command both services agree on: the original demo's `{"orderId", "userId"}` body,
 * with the id now a UUIDv7 string. The publisher encodes with this schema, the consumer decodes.
 */
export class SendNotificationCommand extends Schema.Class<SendNotificationCommand>("SendNotificationCommand")({
  orderId: OrderId,
  userId: UserId
}) {}

export const COMMAND_TYPE = "SendNotificationCommand"

const decodeJson = Schema.decodeEither(Schema.parseJson(SendNotificationCommand), { errors: "all" })

/**
 * The body the schema's encoding gives (a unit test holds them equal), written directly: both
 * fields encode as themselves, and the schema's generic encoder was a noticeable share of the order
 * service's allocations per request (docs/performance.md, "What the profiles showed").
 */
export const encodeCommand = ({ orderId, userId }: SendNotificationCommand): Buffer =>
  Buffer.from(JSON.stringify({ orderId, userId } satisfies typeof SendNotificationCommand.Encoded))

/**
 * AMQP properties of a command; `messageId` is the order id, so a receiver can deduplicate.
 * `headers` may carry the trace context (`traceparent`).
 */
export const commandProperties = (
  orderId: string,
  appId: string,
  headers?: Record<string, string> | undefined
) => ({
  ...(headers === undefined ? undefined : { headers }),
  persistent: true,
  mandatory: true,
  contentType: "application/json",
  messageId: orderId,
  type: COMMAND_TYPE,
  timestamp: Math.floor(Date.now() / 1000),
  appId
}) satisfies amqp.Options.Publish

/** The command's fields alone: the same field schemas, without the class around them. */
const decodeFields = Schema.decodeUnknownEither(Schema.Struct(SendNotificationCommand.fields), { errors: "all" })

/**
 * Decodes a message body; the failure is one line naming every field at fault.
 *
 * A valid body takes the short way: `JSON.parse`, the fields decoded by their schemas, and the
 * class built from them without checking them twice. The whole `parseJson(SendNotificationCommand)`
 * decoder gives the same result but was a large share of the consumer's CPU when draining a backlog
 * (docs/performance.md, "What the profiles showed"); it still runs for a body that fails, so that
 * every failure reads as it always has.
 */
export const decodeCommand = (body: Buffer): Either.Either<SendNotificationCommand, string> => {
  const text = body.toString("utf8")
  const fields = parseJsonOrUndefined(text)
  if (fields !== undefined) {
    const decoded = decodeOrReason(() => Either.mapLeft(decodeFields(fields), String))
    if (Either.isRight(decoded)) return Either.right(new SendNotificationCommand(decoded.right, true))
  }
  return decodeOrReason(() =>
    decodeJson(text).pipe(Either.mapLeft((error) => describeIssues(ParseResult.ArrayFormatter.formatErrorSync(error))))
  )
}

const parseJsonOrUndefined = (text: string): unknown => {
  try {
    return JSON.parse(text)
  } catch {
    return undefined
  }
}
