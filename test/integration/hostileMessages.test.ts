import { HttpClient, HttpClientRequest } from "@effect/platform"
import { describe, expect, it } from "@effect/vitest"
import type * as amqp from "amqplib"
import { Effect, FastCheck as fc, Layer, Schedule } from "effect"
import { EVENTS_EXCHANGE, isStorableText } from "../../src/contracts/NotificationEvents"
import { commandProperties, encodeCommand, SendNotificationCommand } from "../../src/contracts/SendNotificationCommand"
import { makeOrderId, UserId } from "../../src/domain/Order"
import { CommandConsumer } from "../../src/notification/CommandConsumer"
import { NotificationSender } from "../../src/notification/NotificationSender"
import { eventually, nextMessages, queueDeclaration, queueDepth, testBroker, uniqueQueueName } from "../support/broker"
import { recordingLogger } from "../support/logs"
import { eventsQueueOf, notificationConsumer, orderService } from "../support/services"

/**
 * Hostile messages, generated, through the real broker (contract §5, §6): a batch of generated
 * deliveries on the command queue, and on the order service's events queue, each told apart by a
 * header of the test's own. Every one that is not a command (or event) lands in the queue's
 * dead-letter queue with its story; every valid one is processed; nothing is left unsettled, and
 * the consumer is still subscribed afterwards. The in-process properties (many more runs) are in
 * test/unit/hostileMessages.property.test.ts.
 */

const CASES = 40
/** The test's own header naming each case; the story headers keep it. */
const CASE = "x-test-case"

const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i

const isCommand = (content: Buffer) => {
  try {
    const json = JSON.parse(content.toString("utf8"))
    return typeof json === "object" && json !== null && !Array.isArray(json) && typeof json.orderId === "string" &&
      UUID.test(json.orderId) && Number.isSafeInteger(json.userId) && json.userId > 0
  } catch {
    return false
  }
}

const hostileChar = fc.oneof(
  { weight: 3, arbitrary: fc.string({ unit: "binary", minLength: 1, maxLength: 1 }) },
  { weight: 1, arbitrary: fc.constantFrom("\u0000", "\t", "\u007f", "\u00e9", "\u202e", "\ud800", "😀", "'", "\"", "\\") }
)
const hostileString = (maxLength: number) => fc.string({ unit: hostileChar, maxLength })

/** The body of a command with a fresh order id each time. */
const freshCommand = fc.constant(null).map(() => new SendNotificationCommand({ orderId: makeOrderId(), userId: UserId.make(42) }))

const commandBody = fc.oneof(
  { weight: 3, arbitrary: freshCommand.map((command) => encodeCommand(command)) },
  {
    weight: 2,
    arbitrary: fc.tuple(freshCommand, fc.dictionary(hostileString(8), fc.jsonValue({ maxDepth: 2 }), { minKeys: 1, maxKeys: 3 }))
      .map(([command, extra]) => Buffer.from(JSON.stringify({ ...extra, orderId: command.orderId, userId: command.userId })))
  },
  {
    weight: 2,
    arbitrary: fc.tuple(freshCommand, fc.constantFrom("orderId", "userId"), fc.oneof(fc.jsonValue({ maxDepth: 1 }), hostileString(30)))
      .map(([command, field, value]) => Buffer.from(JSON.stringify({ orderId: command.orderId, userId: 42, [field]: value })))
  },
  { weight: 2, arbitrary: fc.jsonValue({ maxDepth: 2 }).map((value) => Buffer.from(JSON.stringify(value))) },
  { weight: 2, arbitrary: fc.uint8Array({ maxLength: 100 }).map((bytes) => Buffer.from(bytes)) }
)

/** Header values amqplib can publish (it refuses NaN, -Infinity and numbers below -2^63). */
const headerValue = fc.oneof(
  hostileString(20),
  fc.integer(),
  fc.double({ noNaN: true, min: -(2 ** 62), max: Number.MAX_VALUE }),
  fc.boolean(),
  fc.constant(null),
  fc.uint8Array({ maxLength: 10 }).map((bytes) => Buffer.from(bytes)),
  fc.nat().map((value) => ({ "!": "timestamp", value })),
  fc.array(fc.oneof(fc.integer(), fc.string({ maxLength: 5 })), { maxLength: 3 }),
  fc.dictionary(fc.string({ maxLength: 5 }), fc.integer(), { maxKeys: 2 })
)

const publishOptions = fc.record({
  headers: fc.dictionary(
    fc.oneof(
      fc.constantFrom("x-attempts", "x-failure-reason", "x-first-failed-at", "x-original-queue", "x-death", "traceparent"),
      fc.string({ unit: fc.string({ unit: "grapheme-ascii", minLength: 1, maxLength: 1 }), maxLength: 12 })
    ),
    headerValue,
    { maxKeys: 4 }
  ),
  messageId: hostileString(30).filter((id) => Buffer.byteLength(id) <= 255),
  contentType: fc.constantFrom("application/json", "text/plain", ""),
  type: fc.constantFrom("SendNotificationCommand", "Other", ""),
  persistent: fc.boolean()
}, { requiredKeys: ["headers", "persistent"] })

/** A sender double that records the order ids it was asked to send. */
const recordingSender = () => {
  const sent: Array<string> = []
  const layer = Layer.succeed(
    NotificationSender,
    NotificationSender.make({ send: (command) => Effect.sync(() => void sent.push(command.orderId)) })
  )
  return { sent, layer }
}

const awaitSubscribed = CommandConsumer.pipe(
  Effect.flatMap((consumer) => consumer.isReady),
  Effect.filterOrFail((ready) => ready),
  Effect.retry(Schedule.spaced("20 millis").pipe(Schedule.upTo("15 seconds")))
)

/** The order service has declared its events queue (what is sent to it before then is dropped). */
const awaitDeclared = (queue: string) =>
  eventually(() => Effect.runPromise(queueDeclaration(queue)), (declared) => declared !== undefined, { what: `${queue} declared` })

const headerOf = (message: amqp.Message, name: string) => (message.properties.headers ?? {})[name]

/** The longest refusal reason, before its "... (N characters)" suffix (src/runtime/describe.ts). */
const MAX_REASON_CHARS = 1000

/**
 * A refusal reason as it reaches the dead-letter queue: one line without any control character
 * (each escaped as `\uXXXX`), and at most MAX_REASON_CHARS, or those and "... (N characters)".
 * (A lone surrogate cannot be told apart here: amqplib sends each as U+FFFD.)
 */
const expectOneLineReason = (reason: unknown, what: string) => {
  expect(typeof reason, what).toBe("string")
  const text = reason as string
  expect(text, what).not.toMatch(/[\u0000-\u001f\u007f]/)
  if (text.length > MAX_REASON_CHARS) expect(text, what).toMatch(/^[\s\S]{1000}\.\.\. \(\d+ characters\)$/)
}

/** A poison command's reason: "not a valid SendNotificationCommand (...)", what decodeCommand said one line and bounded. */
const expectPoisonReason = (reason: unknown, what: string) => {
  const inner = /^not a valid SendNotificationCommand \(([\s\S]+)\)$/.exec(String(reason))
  expect(inner, `${what}: ${String(reason).slice(0, 200)}`).not.toBeNull()
  expectOneLineReason(inner![1], what)
  return inner![1]!
}

describe("the notification consumer, against the real broker, given hostile deliveries", () => {
  it.scopedLive(`${CASES} generated deliveries: each poison one dead-lettered with its story, each command sent; nothing left, still subscribed`, () =>
    Effect.gen(function*() {
      const queue = uniqueQueueName("hostilecmd")
      const { channel } = yield* testBroker(queue)
      const sender = recordingSender()
      const cases = fc.sample(fc.tuple(commandBody, publishOptions), CASES)
      const poison = cases.flatMap(([body], i) => (isCommand(body) ? [] : [i]))
      const commands = cases.flatMap(([body]) => (isCommand(body) ? [JSON.parse(body.toString()).orderId as string] : []))
      yield* Effect.gen(function*() {
        yield* awaitSubscribed
        cases.forEach(([body, options], i) => {
          channel.sendToQueue(queue, body, { ...options, headers: { ...options.headers, [CASE]: i } })
        })
        // And a plain command after them all: still processed.
        const last = new SendNotificationCommand({ orderId: makeOrderId(), userId: UserId.make(1) })
        channel.sendToQueue(queue, encodeCommand(last), commandProperties(last.orderId, "test"))

        const deadLettered = poison.length === 0 ? [] : yield* nextMessages(channel, `${queue}.dlq`, poison.length)
        yield* eventually(() => Promise.resolve(sender.sent.length), (n) => n >= commands.length + 1, { what: "every command sent" })
        yield* eventually(() => Effect.runPromise(queueDepth(queue)), (depth) => depth === 0, { what: "the queue drained" })

        expect(deadLettered.map((m) => headerOf(m, CASE)).sort((a, b) => a - b)).toEqual(poison)
        for (const message of deadLettered) {
          const i = headerOf(message, CASE) as number
          expect(message.content.equals(cases[i]![0])).toBe(true)
          expectPoisonReason(headerOf(message, "x-failure-reason"), `case ${i}: ${cases[i]![0].toString()}`)
          // The story's own headers are kept from the message when it has them (they survive a delay
          // queue that way), so a publisher's own x-original-queue stays; see the report.
          if (!("x-original-queue" in cases[i]![1].headers)) expect(headerOf(message, "x-original-queue")).toBe(queue)
          expect(Number.isSafeInteger(headerOf(message, "x-attempts"))).toBe(true)
        }
        expect([...sender.sent].sort()).toEqual([...commands, last.orderId].sort())
        expect(yield* Effect.flatMap(CommandConsumer, (consumer) => consumer.isReady)).toBe(true)
      }).pipe(Effect.provide(notificationConsumer({ COMMAND_QUEUE: queue, NOTIFICATION_PREFETCH: 10 }, sender.layer)))
      expect(yield* queueDepth(`${queue}.dlq`)).toBe(0)
    }), 30_000)

  /**
   * The one message `queue`'s dead-letter queue receives within 5 s; if none comes, a failure that
   * says where the message is instead (still in the queue, or nowhere: lost) and what the consumer did.
   */
  const awaitDeadLetter = (channel: amqp.Channel, queue: string, lines: ReadonlyArray<string>) =>
    Effect.gen(function*() {
      const arrived = yield* eventually(() => Effect.runPromise(queueDepth(`${queue}.dlq`)), (depth) => depth > 0, { timeoutMs: 5_000 }).pipe(
        Effect.as(true),
        Effect.catchAllDefect(() => Effect.succeed(false))
      )
      if (arrived) return (yield* nextMessages(channel, `${queue}.dlq`, 1))[0]!
      const inQueue = yield* queueDepth(queue)
      const subscriptions = lines.filter((line) => line.startsWith("Consuming")).length
      return yield* Effect.fail(
        new Error(
          `nothing reached ${queue}.dlq within 5 s; ${
            inQueue === 0 ? "the message is in neither queue: lost" : `${inQueue} message(s) still in the queue (ready or unacked)`
          }; the consumer subscribed ${subscriptions} time(s); its last lines: ${lines.slice(-5).map((l) => l.slice(0, 240)).join(" | ")}`
        )
      )
    })

  // What the in-process property found, through the broker: each case, then a plain command; and
  // what decodeCommand's reason must then be (inside "not a valid SendNotificationCommand (...)").
  const poisonCases: ReadonlyArray<[string, () => Buffer, (inner: string) => void]> = [
    [
      "a body nested 30000 deep (60 KB)",
      () => Buffer.from(`{"orderId":${"[".repeat(30_000)}${"]".repeat(30_000)}}`),
      (inner) => expect(inner).toBe("the body is nested too deeply to decode")
    ],
    [
      "a body whose reason is over 64 KiB (a 70 KB orderId)",
      () => Buffer.from(JSON.stringify({ orderId: "x".repeat(70_000) })),
      (inner) => expect(inner).toMatch(/^orderId: Expected UUIDv7 [\s\S]{970,}\.\.\. \(7\d{4} characters\)$/)
    ],
    [
      "a body with a line break the reason quotes",
      () => Buffer.from("\n[forged] INFO Notification sent\n"),
      // The line break escaped, not dropped: the reason still says what the body held.
      (inner) => expect(inner).toContain("\\u000a[forged]")
    ]
  ]
  for (const [what, body, expectInner] of poisonCases) {
    it.scopedLive(`${what}: dead-lettered at once with its story in one line, and the next command is still sent`, () =>
      Effect.gen(function*() {
        const queue = uniqueQueueName("poisoncase")
        const { channel } = yield* testBroker(queue)
        const sender = recordingSender()
        const logs = recordingLogger()
        yield* Effect.gen(function*() {
          yield* awaitSubscribed
          channel.sendToQueue(queue, body(), { messageId: "poison-1", persistent: true })
          const next = new SendNotificationCommand({ orderId: makeOrderId(), userId: UserId.make(1) })
          channel.sendToQueue(queue, encodeCommand(next), commandProperties(next.orderId, "test"))
          const deadLettered = yield* awaitDeadLetter(channel, queue, logs.lines)
          expect(deadLettered.properties.messageId).toBe("poison-1")
          expectInner(expectPoisonReason(headerOf(deadLettered, "x-failure-reason"), what))
          expect(headerOf(deadLettered, "x-original-queue")).toBe(queue)
          yield* eventually(() => Promise.resolve(sender.sent), (sent) => sent.includes(next.orderId), { what: "the next command sent" })
          yield* eventually(() => Effect.runPromise(queueDepth(queue)), (depth) => depth === 0, { what: "the queue drained" })
          const deadLetterLines = logs.lines.filter((line) => line.startsWith("Dead-lettered"))
          expect(deadLetterLines).toHaveLength(1)
          expect(deadLetterLines[0]).not.toMatch(/[\u0000-\u001f\u007f]/)
        }).pipe(Effect.provide(notificationConsumer({ COMMAND_QUEUE: queue, SHUTDOWN_TIMEOUT_MS: 1000 }, sender.layer).pipe(Layer.provide(logs.layer))))
      }), 30_000)
  }
})

// ---------------------------------------------------------------------------------------------
// Events.

type Json = Record<string, any>

const post = (body: unknown) =>
  HttpClientRequest.post("/orders").pipe(
    HttpClientRequest.bodyUnsafeJson(body),
    HttpClient.execute,
    Effect.flatMap((response) => Effect.map(response.json, (json) => json as Json)),
    Effect.scoped
  )

const getOrder = (orderId: string) =>
  HttpClient.get(`/orders/${orderId}`).pipe(Effect.flatMap((response) => Effect.map(response.json, (json) => json as Json)), Effect.scoped)

const orderUntil = (orderId: string, check: (order: Json) => boolean) =>
  getOrder(orderId).pipe(Effect.filterOrFail(check), Effect.retry(Schedule.spaced("25 millis").pipe(Schedule.upTo("20 seconds"))))

interface EventCase {
  readonly content: Buffer
  readonly options: amqp.Options.Publish
  /** What the consumer must do with it. */
  readonly expect: "deadLetter" | "apply" | "ignore"
  /** For an event refused for text the store cannot keep: what its reason says. */
  readonly refusedFor?: RegExp
}

/** What a string becomes in UTF-8 on the wire (amqplib's shortstr): each lone surrogate a U+FFFD. */
const asUtf8 = (text: string) => Buffer.from(text, "utf8").toString("utf8")

/**
 * The contract for text in an event: a failure's reason (JSON, which carries a NUL and a lone
 * surrogate as escapes) and the messageId as received must be StorableText, or the event is
 * dead-lettered: never stored mangled, never retried.
 */
const refusedFor = (messageId: string, reason: string | undefined): RegExp | undefined =>
  !isStorableText(asUtf8(messageId))
    ? /^the event's messageId holds a NUL or a lone surrogate$/
    : reason !== undefined && !isStorableText(reason)
    ? /^not a valid NotificationFailed \(.*\breason: must be text without NUL or lone surrogates/
    : undefined

/** Events for `orderId` (and others): valid ones with hostile ids and reasons, and broken ones. */
const eventCases = (orderId: string) => {
  const when = fc.date({ noInvalidDate: true, min: new Date("2020-01-01"), max: new Date("2030-01-01") }).map((d) => d.toISOString())
  const validBody = fc.oneof(
    when.map((sentAt) => ({ type: "NotificationSent", body: { orderId, userId: 42, sentAt } })),
    fc.tuple(hostileString(60), fc.integer({ min: 1, max: 9 }), when).map(([reason, attempts, failedAt]) => ({
      type: "NotificationFailed",
      body: { orderId, userId: 42, reason, attempts, failedAt }
    }))
  )
  const valid = fc.tuple(validBody, hostileString(40).filter((id) => id !== "" && Buffer.byteLength(id) <= 255)).map(
    ([{ body, type }, messageId]): EventCase => {
      const refused = refusedFor(messageId, "reason" in body ? body.reason : undefined)
      return {
        content: Buffer.from(JSON.stringify(body)),
        options: { type, messageId, contentType: "application/json", persistent: true },
        ...(refused === undefined ? { expect: "apply" } : { expect: "deadLetter", refusedFor: refused })
      }
    }
  )
  const unknownOrder = valid.map((event): EventCase => ({
    ...event,
    content: Buffer.from(JSON.stringify({ ...JSON.parse(event.content.toString()), orderId: makeOrderId() })),
    // Refused before the store is asked for the order, if its text is refused.
    expect: event.expect === "deadLetter" ? "deadLetter" : "ignore"
  }))
  const broken = fc.tuple(validBody, fc.nat(3), commandBody, fc.string({ minLength: 1, maxLength: 10 })).map(
    ([{ body, type }, how, garbage, id]): EventCase => {
      const base = { type, messageId: `broken-${id}`, contentType: "application/json", persistent: true }
      switch (how) {
        case 0:
          return { content: garbage, options: base, expect: "deadLetter" }
        case 1:
          return { content: Buffer.from(JSON.stringify(body)), options: { ...base, type: "NotificationBounced" }, expect: "deadLetter" }
        case 2: {
          const { messageId: _, ...withoutId } = base
          return { content: Buffer.from(JSON.stringify(body)), options: withoutId, expect: "deadLetter" }
        }
        default:
          return { content: Buffer.from(JSON.stringify({ ...body, orderId: 17 })), options: base, expect: "deadLetter" }
      }
    }
  )
  return fc.oneof({ weight: 3, arbitrary: valid }, { weight: 1, arbitrary: unknownOrder }, { weight: 3, arbitrary: broken })
}

describe("the order service's event consumer, against the real broker, given hostile events", () => {
  it.scopedLive(`${CASES} generated events: the broken ones (a NUL or a lone surrogate in their text too) dead-lettered with a one-line reason, unknown orders acked, the rest applied exactly; still subscribed`, () =>
    Effect.gen(function*() {
      const queue = uniqueQueueName("hostileevt")
      const { channel } = yield* testBroker(queue)
      const eventsQueue = eventsQueueOf(queue)
      yield* Effect.gen(function*() {
        const { order } = yield* post({ userId: 42 })
        const orderId: string = order.orderId
        yield* orderUntil(orderId, (o) => o.status === "queued")
        yield* awaitDeclared(eventsQueue)

        // Each valid event's id made distinct (a repeated one would be a duplicate, which changes nothing).
        const cases = fc.sample(eventCases(orderId), CASES).map((c, i) =>
          c.expect === "deadLetter" ? c : { ...c, options: { ...c.options, messageId: `${c.options.messageId}#${i}` } }
        )
        cases.forEach(({ content, options }, i) => {
          const published = { ...options, headers: { [CASE]: i } }
          // Straight onto the queue, and through the exchange, as publishers of either kind would.
          if (i % 2 === 0) channel.sendToQueue(eventsQueue, content, published)
          else channel.publish(EVENTS_EXCHANGE, "notification.x", content, published)
        })

        const broken = cases.flatMap((c, i) => (c.expect === "deadLetter" ? [i] : []))
        const deadLettered = broken.length === 0 ? [] : yield* nextMessages(channel, `${eventsQueue}.dlq`, broken.length)
        yield* eventually(() => Effect.runPromise(queueDepth(eventsQueue)), (depth) => depth === 0, { what: "the events queue drained" })
        expect(deadLettered.map((m) => headerOf(m, CASE)).sort((a, b) => a - b)).toEqual(broken)
        for (const message of deadLettered) {
          const i = headerOf(message, CASE) as number
          const reason = headerOf(message, "x-failure-reason")
          expectOneLineReason(reason, `case ${i}`)
          const refused = cases[i]!.refusedFor
          if (refused !== undefined) expect(reason, `case ${i}`).toMatch(refused)
        }

        // What the applied ones add up to (messageIds are distinct unless generated equal: then one is a duplicate).
        const applied = cases.filter((c) => c.expect === "apply")
        const byId = new Map(applied.map((c) => [String(c.options.messageId), JSON.parse(c.content.toString()) as Json]))
        const sent = [...byId.values()].filter((body) => "sentAt" in body)
        const failed = [...byId.values()].filter((body) => "failedAt" in body)
        const settled = yield* getOrder(orderId)
        expect(settled.status).toBe(sent.length > 0 ? "notified" : failed.length > 0 ? "failed" : "queued")
        expect(settled.notifications).toBe(sent.length)
        if (failed.length > 0) {
          const latest = Math.max(...failed.map((body) => Date.parse(body.failedAt)))
          const reasons = failed.filter((body) => Date.parse(body.failedAt) === latest).map((body) => body.reason)
          // The reason as sent, exactly.
          expect(reasons).toContain(settled.failure.reason)
        }
        // Still consuming: one more event, after them all, is applied.
        channel.sendToQueue(
          eventsQueue,
          Buffer.from(JSON.stringify({ orderId, userId: 42, sentAt: new Date().toISOString() })),
          { type: "NotificationSent", messageId: "after-all-of-them", contentType: "application/json", persistent: true }
        )
        yield* orderUntil(orderId, (o) => o.notifications === sent.length + 1)
      }).pipe(Effect.provide(orderService({ COMMAND_QUEUE: queue })))
    }), 30_000)

  it.scopedLive("an event body nested 30000 deep (60 KB): dead-lettered, and the next event still applied", () =>
    Effect.gen(function*() {
      const queue = uniqueQueueName("deepevt")
      const { channel } = yield* testBroker(queue)
      const eventsQueue = eventsQueueOf(queue)
      const logs = recordingLogger()
      yield* Effect.gen(function*() {
        const { order } = yield* post({ userId: 42 })
        yield* orderUntil(order.orderId, (o) => o.status === "queued")
        yield* awaitDeclared(eventsQueue)
        const properties = (messageId: string) => ({ type: "NotificationSent", messageId, contentType: "application/json", persistent: true })
        channel.sendToQueue(eventsQueue, Buffer.from(`{"orderId":${"[".repeat(30_000)}${"]".repeat(30_000)}}`), properties("deep-1"))
        channel.sendToQueue(eventsQueue, Buffer.from(JSON.stringify({ orderId: order.orderId, userId: 42, sentAt: new Date().toISOString() })), properties("good-1"))
        const [deadLettered] = yield* nextMessages(channel, `${eventsQueue}.dlq`, 1).pipe(
          Effect.timeoutFail({
            duration: "5 seconds",
            onTimeout: () =>
              new Error(
                `nothing reached ${eventsQueue}.dlq within 5 s; the event consumer subscribed ${
                  logs.lines.filter((line) => line.startsWith("Consuming")).length
                } times; its last lines: ${logs.lines.slice(-8).map((l) => l.slice(0, 300)).join(" | ")}`
              )
          })
        )
        expect(deadLettered.properties.messageId).toBe("deep-1")
        expect(headerOf(deadLettered, "x-failure-reason")).toBe("the body is nested too deeply to decode")
        yield* orderUntil(order.orderId, (o) => o.status === "notified")
        yield* eventually(() => Effect.runPromise(queueDepth(eventsQueue)), (depth) => depth === 0, { what: "the events queue drained" })
      }).pipe(Effect.provide(orderService({ COMMAND_QUEUE: queue, SHUTDOWN_TIMEOUT_MS: 1000 }).pipe(Layer.provide(logs.layer))))
    }), 30_000)
})
