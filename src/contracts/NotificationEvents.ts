import type * as amqp from "amqplib"
import { Either, ParseResult, Schema } from "effect"
import { randomUUID } from "node:crypto"
import { OrderId, UserId } from "../domain/Order"
import { decodeOrReason, describeIssues, LONE_SURROGATE } from "../runtime/describe"

/**
 * The events the notification service sends back: what became of a command. Published to one
 * durable topic exchange; whoever wants them binds a queue of its own (the order service binds
 * `notification.*`). The AMQP `type` property names the event, the routing key its kind.
 */
export const EVENTS_EXCHANGE = "notification.events"
export const EVENTS_APP_ID = "notification-service"

export class NotificationSentEvent extends Schema.Class<NotificationSentEvent>("NotificationSent")({
  orderId: OrderId,
  userId: UserId,
  sentAt: Schema.Date
}) {}

/** Text the order store keeps exactly, on SQLite and PostgreSQL alike: no NUL, no lone surrogate. */
export const isStorableText = (text: string) => !text.includes("\u0000") && text.match(LONE_SURROGATE) === null

const StorableText = Schema.String.pipe(
  Schema.filter(isStorableText, { message: () => "must be text without NUL or lone surrogates" })
)

export class NotificationFailedEvent extends Schema.Class<NotificationFailedEvent>("NotificationFailed")({
  orderId: OrderId,
  userId: UserId,
  reason: StorableText,
  attempts: Schema.Int.pipe(Schema.positive()),
  failedAt: Schema.Date
}) {}

export type NotificationEvent = NotificationSentEvent | NotificationFailedEvent

const KINDS = {
  NotificationSent: { schema: NotificationSentEvent, routingKey: "notification.sent" },
  NotificationFailed: { schema: NotificationFailedEvent, routingKey: "notification.failed" }
} as const

type EventType = keyof typeof KINDS

const typeOf = (event: NotificationEvent): EventType =>
  event instanceof NotificationSentEvent ? "NotificationSent" : "NotificationFailed"

/** Where an event goes and what it carries: body, routing key and properties (contract §5). */
export const encodeEvent = (event: NotificationEvent, headers: Record<string, string> | undefined) => {
  const type = typeOf(event)
  const { routingKey, schema } = KINDS[type]
  const body = Schema.encodeSync(schema as Schema.Schema<NotificationEvent, unknown>)(event)
  return {
    routingKey,
    content: Buffer.from(JSON.stringify(body)),
    options: {
      ...(headers === undefined ? undefined : { headers }),
      persistent: true,
      contentType: "application/json",
      type,
      messageId: randomUUID(),
      correlationId: event.orderId,
      timestamp: Math.floor(Date.now() / 1000),
      appId: EVENTS_APP_ID
    } satisfies amqp.Options.Publish
  }
}

/** An event as received: the event itself and the id that tells a duplicate from a second event. */
export interface ReceivedEvent {
  readonly eventId: string
  readonly event: NotificationEvent
}

const decoders = {
  NotificationSent: Schema.decodeEither(Schema.parseJson(NotificationSentEvent), { errors: "all" }),
  NotificationFailed: Schema.decodeEither(Schema.parseJson(NotificationFailedEvent), { errors: "all" })
} as const

/** Decodes a delivery into an event, or says in one line why it is not one. */
export const decodeEvent = (message: amqp.Message): Either.Either<ReceivedEvent, string> => {
  const type: unknown = message.properties.type
  if (type !== "NotificationSent" && type !== "NotificationFailed") {
    return Either.left(`unknown event type ${JSON.stringify(type ?? null)}`)
  }
  const eventId: unknown = message.properties.messageId
  if (typeof eventId !== "string" || eventId === "") return Either.left("the event has no messageId")
  if (!isStorableText(eventId)) return Either.left("the event's messageId holds a NUL or a lone surrogate")
  const text = message.content.toString("utf8")
  return decodeOrReason(() => {
    const decoded: Either.Either<NotificationEvent, ParseResult.ParseError> = type === "NotificationSent"
      ? decoders.NotificationSent(text)
      : decoders.NotificationFailed(text)
    return decoded.pipe(
      Either.mapBoth({
        onLeft: (error) => `not a valid ${type} (${describeIssues(ParseResult.ArrayFormatter.formatErrorSync(error))})`,
        onRight: (event): ReceivedEvent => ({ eventId, event })
      })
    )
  })
}
