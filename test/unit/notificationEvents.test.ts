import { describe, expect, it } from "@effect/vitest"
import type * as amqp from "amqplib"
import { Either } from "effect"
import {
  decodeEvent,
  encodeEvent,
  EVENTS_APP_ID,
  NotificationFailedEvent,
  type NotificationEvent,
  NotificationSentEvent
} from "../../src/contracts/NotificationEvents"
import { makeOrderId, UserId } from "../../src/domain/Order"

const orderId = makeOrderId()
const sent = new NotificationSentEvent({ orderId, userId: UserId.make(42), sentAt: new Date("2025-06-01T12:00:00.123Z") })
const failed = new NotificationFailedEvent({
  orderId,
  userId: UserId.make(42),
  reason: "SMTP said no",
  attempts: 5,
  failedAt: new Date("2025-06-01T12:05:00.000Z")
})

/** A delivery as the consumer receives it: the published body and properties. */
const delivered = (content: Buffer, properties: Record<string, unknown>) =>
  ({ content, fields: { deliveryTag: 1, redelivered: false }, properties: { headers: {}, ...properties } }) as unknown as amqp.Message

const published = (event: NotificationEvent) => {
  const { content, options } = encodeEvent(event, undefined)
  return delivered(content, options)
}

const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/

describe("encodeEvent", () => {
  it("writes NotificationSent as the contract's body, to notification.sent", () => {
    const { content, routingKey } = encodeEvent(sent, undefined)
    expect(routingKey).toBe("notification.sent")
    expect(JSON.parse(content.toString("utf8"))).toEqual({ orderId, userId: 42, sentAt: "2025-06-01T12:00:00.123Z" })
  })

  it("writes NotificationFailed as the contract's body, to notification.failed", () => {
    const { content, routingKey } = encodeEvent(failed, undefined)
    expect(routingKey).toBe("notification.failed")
    expect(JSON.parse(content.toString("utf8"))).toEqual({
      orderId,
      userId: 42,
      reason: "SMTP said no",
      attempts: 5,
      failedAt: "2025-06-01T12:05:00.000Z"
    })
  })

  it("gives the properties of the contract: persistent JSON, the event's type, correlated with its order", () => {
    const before = Math.floor(Date.now() / 1000)
    for (const [event, type] of [[sent, "NotificationSent"], [failed, "NotificationFailed"]] as const) {
      const { options } = encodeEvent(event, undefined)
      expect(options).toEqual({
        persistent: true,
        contentType: "application/json",
        type,
        messageId: expect.stringMatching(UUID),
        correlationId: orderId,
        timestamp: expect.any(Number),
        appId: "notification-service"
      })
      expect(options.timestamp).toBeGreaterThanOrEqual(before)
      expect(options.timestamp).toBeLessThanOrEqual(Math.ceil(Date.now() / 1000))
    }
    expect(EVENTS_APP_ID).toBe("notification-service")
  })

  it("gives every event its own messageId, even a second one for the same order", () => {
    const ids = Array.from({ length: 100 }, () => encodeEvent(sent, undefined).options.messageId)
    expect(new Set(ids).size).toBe(ids.length)
  })

  it("carries the trace context headers it is given, and none otherwise", () => {
    const traceparent = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
    expect(encodeEvent(sent, { traceparent }).options.headers).toEqual({ traceparent })
    expect("headers" in encodeEvent(sent, undefined).options).toBe(false)
  })
})

describe("decodeEvent", () => {
  it("round-trips each event, with its messageId as the event id", () => {
    for (const event of [sent, failed]) {
      const message = published(event)
      const decoded = Either.getOrThrow(decodeEvent(message))
      expect(decoded.eventId).toBe(message.properties.messageId)
      expect(decoded.event).toEqual(event)
      expect(decoded.event).toBeInstanceOf(event.constructor)
    }
  })

  const badEvents: ReadonlyArray<[string, amqp.Message, RegExp]> = [
    [
      "a body that is not JSON",
      delivered(Buffer.from("{\"orderId\":"), { type: "NotificationSent", messageId: "e1" }),
      /^not a valid NotificationSent \(.+\)$/
    ],
    [
      "an unknown type",
      delivered(encodeEvent(sent, undefined).content, { type: "NotificationBounced", messageId: "e2" }),
      /^unknown event type "NotificationBounced"$/
    ],
    [
      "no type",
      delivered(encodeEvent(sent, undefined).content, { messageId: "e3" }),
      /^unknown event type null$/
    ],
    [
      "no messageId",
      delivered(encodeEvent(sent, undefined).content, { type: "NotificationSent" }),
      /^the event has no messageId$/
    ],
    [
      "an empty messageId",
      delivered(encodeEvent(sent, undefined).content, { type: "NotificationSent", messageId: "" }),
      /^the event has no messageId$/
    ],
    [
      "an orderId that is not a UUID",
      delivered(Buffer.from(JSON.stringify({ orderId: 1707557234567, userId: 42, sentAt: "2025-06-01T12:00:00Z" })), {
        type: "NotificationSent",
        messageId: "e4"
      }),
      /^not a valid NotificationSent \(orderId: Expected string, actual 1707557234567\)$/
    ],
    [
      "a body of the other type",
      delivered(encodeEvent(sent, undefined).content, { type: "NotificationFailed", messageId: "e5" }),
      /^not a valid NotificationFailed \(reason: is missing; attempts: is missing; failedAt: is missing\)$/
    ],
    [
      "zero attempts",
      delivered(Buffer.from(JSON.stringify({ ...JSON.parse(encodeEvent(failed, undefined).content.toString()), attempts: 0 })), {
        type: "NotificationFailed",
        messageId: "e6"
      }),
      /^not a valid NotificationFailed \(attempts: .+\)$/
    ],
    [
      "a time that is not a date",
      delivered(Buffer.from(JSON.stringify({ orderId, userId: 42, sentAt: "yesterday" })), { type: "NotificationSent", messageId: "e7" }),
      /^not a valid NotificationSent \(sentAt: .+\)$/
    ]
  ]
  for (const [what, message, reason] of badEvents) {
    it(`refuses ${what}, in one line`, () => {
      const why = Either.getOrThrow(Either.flip(decodeEvent(message)))
      expect(why).toMatch(reason)
      expect(why).not.toContain("\n")
    })
  }
})
