import * as SqlClient from "@effect/sql/SqlClient"
import { describe, expect, it, layer } from "@effect/vitest"
import type * as amqp from "amqplib"
import { Arbitrary, Cause, Duration, Effect, Either, Exit, FastCheck as fc, Layer, Option, Schema, SubscriptionRef, TestClock } from "effect"
import { EventEmitter } from "node:events"
import { createRequire } from "node:module"
import { join } from "node:path"
import {
  decodeEvent,
  encodeEvent,
  isStorableText,
  NotificationFailedEvent,
  type NotificationEvent,
  NotificationSentEvent
} from "../../src/contracts/NotificationEvents"
import { decodeCommand, encodeCommand, SendNotificationCommand } from "../../src/contracts/SendNotificationCommand"
import { makeOrderId, type OrderId, UserId } from "../../src/domain/Order"
import { AmqpConnection } from "../../src/messaging/AmqpConnection"
import type { RetryPolicy } from "../../src/messaging/DelayedRetry"
import { copyOptions, withFailure } from "../../src/messaging/FailureStory"
import { consumeQueue } from "../../src/messaging/QueueConsumer"
import { deliveryAttempt, Settlement } from "../../src/messaging/Settlement"
import { processDelivery } from "../../src/notification/CommandConsumer"
import { EventPublisher } from "../../src/notification/EventPublisher"
import { NotificationSender } from "../../src/notification/NotificationSender"
import { databaseLayer, DatabaseTarget } from "../../src/order/store/Database"
import type { OrderStatus } from "../../src/order/store/OrderRecord"
import { OrderStore } from "../../src/order/store/OrderStore"
import { recordingLogger } from "../support/logs"
import { temporaryFolder } from "../support/services"

/**
 * Hostile messages, generated, in-process (contract §5, §6): whatever arrives on the command queue
 * or the events queue, the consumer decides a settlement without throwing or dying; a message that
 * is not a command (or event) is dead-lettered at once with a one-line reason, and the copy the
 * consumer moves to the dead-letter queue can carry its story; a valid one is processed. And the
 * order store moves an order's status only forward, whatever order its facts arrive in (§4).
 */

// amqplib's own field-table codec, to put headers through the wire format as a consumer receives
// them, and to check that the copy the consumer publishes can be encoded. Not in the package's
// `exports`, so required by its path.
const codec = createRequire(import.meta.url)("../../node_modules/amqplib/lib/codec.js") as {
  readonly encodeTable: (buffer: Buffer, value: Record<string, unknown>, offset: number) => number
  readonly decodeFields: (slice: Buffer) => Record<string, unknown>
}

/** amqplib encodes a header table into a scratch buffer of this size (lib/defs.js). */
const HEADER_TABLE_BYTES = 65536

const encodeHeaders = (headers: Record<string, unknown>) => {
  const buffer = Buffer.alloc(HEADER_TABLE_BYTES)
  const size = codec.encodeTable(buffer, headers, 0)
  return buffer.subarray(4, size)
}

/** The headers as a consumer receives them after `headers` went through the wire. */
const overTheWire = (headers: Record<string, unknown>) => codec.decodeFields(encodeHeaders(headers))

/** Whether amqplib can publish these at all (it cannot encode NaN, -Infinity or numbers below -2^63, for one). */
const publishable = (headers: Record<string, unknown>) => {
  try {
    encodeHeaders(headers)
    return true
  } catch {
    return false
  }
}

/** What a string becomes in UTF-8 on the wire: each lone surrogate a U+FFFD. */
const asUtf8 = (text: string) => Buffer.from(text, "utf8").toString("utf8")

/** The longest refusal reason, before its "... (N characters)" suffix (src/runtime/describe.ts). */
const MAX_REASON_CHARS = 1000

/**
 * A refusal reason as every one must be (it is logged, put in a header, and stored): one line, no
 * control character at all (each escaped as `\uXXXX`), no lone surrogate (each a U+FFFD), and at
 * most MAX_REASON_CHARS characters, or those and "... (N characters)" for the N it had.
 */
const expectOneLineReason = (reason: string) => {
  expect(reason, JSON.stringify(reason.slice(0, 200))).not.toMatch(/[\u0000-\u001f\u007f]/)
  expect(asUtf8(reason) === reason, `a lone surrogate in ${JSON.stringify(reason.slice(0, 200))}`).toBe(true)
  if (reason.length > MAX_REASON_CHARS) {
    const cut = /^[\s\S]{1000}\.\.\. \((\d+) characters\)$/.exec(reason)
    expect(cut, `${reason.length} characters: ...${JSON.stringify(reason.slice(MAX_REASON_CHARS - 20, MAX_REASON_CHARS + 40))}`).not.toBeNull()
    expect(Number(cut![1])).toBeGreaterThan(MAX_REASON_CHARS)
  }
}

/** A poison command's reason: what decodeCommand said, one line and bounded, in "not a valid SendNotificationCommand (...)". */
const expectPoisonReason = (reason: string) => {
  const inner = /^not a valid SendNotificationCommand \(([\s\S]+)\)$/.exec(reason)
  expect(inner, reason.slice(0, 200)).not.toBeNull()
  expectOneLineReason(inner![1]!)
  return inner![1]!
}

const NESTED_TOO_DEEPLY = "the body is nested too deeply to decode"

/** Below this depth a body is described as any other is; past some thousands, it may be too deep to (it depends on the JIT). */
const DESCRIBED_UP_TO_DEPTH = 500

const delivery = (content: Buffer, properties: Partial<amqp.MessageProperties> = {}): amqp.Message =>
  ({
    content,
    fields: { deliveryTag: 1, redelivered: false, exchange: "", routingKey: "q", consumerTag: "c" },
    properties: { headers: {}, ...properties }
  }) as unknown as amqp.Message

// ---------------------------------------------------------------------------------------------
// Generators.

const hostileChar = fc.oneof(
  { weight: 4, arbitrary: fc.string({ unit: "binary", minLength: 1, maxLength: 1 }) },
  {
    weight: 2,
    arbitrary: fc.constantFrom(
      "\u0000", "\u0001", "\t", "\n", "\r", "\u007f", "\u00e9", "\u2028", "\u202e", "\ufeff", "\ud800", "\udfff", "😀",
      "'", "\"", "\\", "%", "{", "}", "[", "]", ":", ","
    )
  }
)
const hostileString = (maxLength: number) => fc.string({ unit: hostileChar, maxLength })

const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i

/** The contract's command, judged without its schema: a JSON object with a UUID `orderId` and a positive safe-integer `userId`. */
const isCommand = (content: Buffer) => {
  let json: unknown
  try {
    json = JSON.parse(content.toString("utf8"))
  } catch {
    return false
  }
  if (typeof json !== "object" || json === null || Array.isArray(json)) return false
  const { orderId, userId } = json as { orderId?: unknown; userId?: unknown }
  return typeof orderId === "string" && UUID.test(orderId) && Number.isSafeInteger(userId) && (userId as number) > 0
}

const validCommandJson = Arbitrary.make(SendNotificationCommand).map((command) => JSON.parse(encodeCommand(command).toString("utf8")) as Record<string, unknown>)

/** Command bodies: valid ones (some with extra fields), wrong shapes, wrong values, and bytes. */
const commandBody = fc.oneof(
  { weight: 2, arbitrary: validCommandJson.map((json) => Buffer.from(JSON.stringify(json))) },
  {
    weight: 2,
    arbitrary: fc.tuple(validCommandJson, fc.dictionary(hostileString(10), fc.jsonValue({ maxDepth: 2 }), { minKeys: 1, maxKeys: 4 }))
      .map(([json, extra]) => Buffer.from(JSON.stringify({ ...extra, ...json })))
  },
  {
    weight: 2,
    arbitrary: fc.tuple(
      validCommandJson,
      fc.constantFrom("orderId", "userId"),
      fc.oneof(fc.jsonValue({ maxDepth: 2 }), hostileString(40), fc.double(), fc.constant(1707557234567))
    ).map(([json, field, value]) => Buffer.from(JSON.stringify({ ...json, [field]: value })))
  },
  { weight: 2, arbitrary: fc.jsonValue().map((value) => Buffer.from(JSON.stringify(value))) },
  { weight: 2, arbitrary: fc.uint8Array({ maxLength: 200 }).map((bytes) => Buffer.from(bytes)) },
  { weight: 1, arbitrary: hostileString(60).map((text) => Buffer.from(text, "utf8")) },
  { weight: 1, arbitrary: fc.constantFrom("", "null", "[]", "{}", "\"\"", "0", "{\"orderId\":", "\u0000", "\ufeff{}").map((text) => Buffer.from(text)) }
)

/** A header value amqplib can put on the wire (it decodes them back to these kinds). */
const headerValue: fc.Arbitrary<unknown> = fc.letrec<{ value: unknown }>((tie) => ({
  value: fc.oneof(
    { depthSize: "small", withCrossShrink: true },
    hostileString(30),
    fc.integer(),
    fc.double(),
    fc.constantFrom(0, -1, 1.5, 2 ** 31, 2 ** 53 - 1, 2 ** 53, 2 ** 63, -(2 ** 63), 1e300, Number.NaN, Infinity, -Infinity),
    fc.boolean(),
    fc.constant(null),
    fc.uint8Array({ maxLength: 20 }).map((bytes) => Buffer.from(bytes)),
    fc.nat().map((value) => ({ "!": "timestamp", value })),
    fc.tuple(fc.integer({ min: 0, max: 255 }), fc.nat()).map(([places, digits]) => ({ "!": "decimal", value: { places, digits } })),
    fc.array(tie("value"), { maxLength: 3 }),
    fc.dictionary(fc.string({ maxLength: 10 }), tie("value"), { maxKeys: 3 })
  )
})).value

/** The headers our consumer reads (counts, story), the ones the broker writes, and any other. */
const headerName = fc.oneof(
  fc.constantFrom(
    "x-delivery-count", "x-acquired-count", "x-attempts", "x-failure-reason", "x-first-failed-at", "x-last-failed-at",
    "x-original-queue", "x-death", "x-first-death-reason", "x-replayed-at", "traceparent", "tracestate", "b3"
  ),
  fc.string({ unit: hostileChar, maxLength: 20 })
)

/** Headers as they arrive: generated as values, then put through amqplib's codec both ways. */
const headers = fc.dictionary(headerName, headerValue, { maxKeys: 6 }).filter(publishable).map(overTheWire)

/** The basic properties a publisher of any kind may set; amqplib decodes shortstrs as UTF-8 strings. */
const properties = fc.record({
  headers,
  messageId: fc.option(hostileString(40), { nil: undefined }),
  contentType: fc.option(fc.constantFrom("application/json", "text/plain", "application/octet-stream", ""), { nil: undefined }),
  type: fc.option(fc.constantFrom("SendNotificationCommand", "NotificationSent", "Other", ""), { nil: undefined }),
  correlationId: fc.option(hostileString(20), { nil: undefined }),
  appId: fc.option(hostileString(20), { nil: undefined }),
  timestamp: fc.option(fc.nat(), { nil: undefined }),
  priority: fc.option(fc.integer({ min: 0, max: 255 }), { nil: undefined }),
  deliveryMode: fc.option(fc.constantFrom(1, 2), { nil: undefined })
}, { requiredKeys: ["headers"] })

// ---------------------------------------------------------------------------------------------
// Doubles: a sender and an event publisher that record what they were given.

const recording = () => {
  const sent: Array<SendNotificationCommand> = []
  const published: Array<NotificationEvent> = []
  const layer = Layer.merge(
    Layer.succeed(NotificationSender, NotificationSender.make({ send: (command) => Effect.sync(() => void sent.push(command)) })),
    Layer.succeed(EventPublisher, EventPublisher.of({
      publish: (event) => Effect.sync(() => void published.push(event)),
      isReady: Effect.succeed(true)
    }))
  )
  return { sent, published, layer }
}

const POLICY: RetryPolicy = { maxAttempts: 5, firstDelayMillis: 1000, maxDelayMillis: 60_000 }

/** What the consumer decides for `message`; a throw while building the decision counts as a defect too. */
const decideCommand = (message: amqp.Message) => {
  const doubles = recording()
  return Effect.suspend(() => processDelivery(message, POLICY)).pipe(
    Effect.provide(doubles.layer),
    Effect.exit,
    Effect.map((exit) => ({ exit, ...doubles }))
  )
}

/**
 * The copy QueueConsumer publishes when it moves a message (to the dead-letter queue here): its
 * headers with the story, as amqplib must encode them. A throw there makes the move fail, and the
 * message goes to the dead-letter queue by the broker's rejection, without its story.
 */
const encodeMovedCopy = (message: amqp.Message, reason: string, attempts: number) => {
  const now = Date.now()
  const moved = withFailure(message, { reason, attempts, failedAt: new Date(now), queue: "q" }, now)
  const options = copyOptions(message, moved)
  return encodeHeaders(options.headers as Record<string, unknown>)
}

// ---------------------------------------------------------------------------------------------
// 4. Commands.

describe("a delivery on the command queue, of any body and properties", () => {
  it.effect.prop(
    "is decided without a throw or a defect: a command is sent and acked, anything else dead-lettered at once, its copy carrying its story",
    [commandBody, properties],
    ([content, props]) =>
      Effect.gen(function*() {
        const message = delivery(content, props)
        const { exit, published, sent } = yield* decideCommand(message)
        if (Exit.isFailure(exit)) expect.fail(`processDelivery died: ${Cause.pretty(exit.cause)}`)
        const settlement = exit.value
        const attempt = deliveryAttempt(message)
        // An integer from 1 (a publisher's own x-delivery-count of 2^53 - 1 takes it past the safe range; see the report).
        expect(Number.isInteger(attempt) && attempt >= 1, `attempt ${attempt}`).toBe(true)
        if (isCommand(content)) {
          expect(settlement).toEqual(Settlement.Ack())
          const { orderId, userId } = JSON.parse(content.toString("utf8"))
          expect(sent.map((c) => ({ orderId: c.orderId, userId: c.userId }))).toEqual([{ orderId, userId }])
          expect(published).toHaveLength(1)
          expect(published[0]).toBeInstanceOf(NotificationSentEvent)
        } else {
          expect(settlement._tag).toBe("DeadLetter")
          const deadLetter = settlement as Extract<Settlement, { _tag: "DeadLetter" }>
          expect(deadLetter.poison).toBe(true)
          expectPoisonReason(deadLetter.reason)
          expect(deadLetter.attempts).toBe(attempt)
          expect(sent).toEqual([])
          expect(published).toEqual([])
          // The copy for the dead-letter queue carries the story, exactly (the reason is well-formed text), and encodes.
          const copy = codec.decodeFields(encodeMovedCopy(message, deadLetter.reason, deadLetter.attempts))
          expect(copy).toMatchObject({ "x-failure-reason": deadLetter.reason, "x-attempts": deadLetter.attempts })
        }
      }),
    { fastCheck: { numRuns: 300 } }
  )

  it.effect.prop(
    "a poison body's reason is one line, whatever control characters or lone surrogates the body holds (it is logged, and put in a header)",
    [fc.oneof(commandBody, hostileString(40).map((s) => Buffer.from(`${s}\n${s}\r\n`)))],
    ([content]) =>
      Effect.gen(function*() {
        const { exit } = yield* decideCommand(delivery(content))
        if (Exit.isFailure(exit)) expect.fail(`processDelivery died: ${Cause.pretty(exit.cause)}`)
        if (exit.value._tag === "DeadLetter") expectPoisonReason(exit.value.reason)
      }),
    { fastCheck: { numRuns: 200 } }
  )

  it.effect.prop(
    "a body nested up to 30000 deep: dead-lettered, never a throw",
    [fc.integer({ min: 1, max: 30_000 }), fc.constantFrom("[", "{\"a\":"), fc.constantFrom("orderId", "userId")],
    ([depth, open, field]) =>
      Effect.gen(function*() {
        const close = open === "[" ? "]" : "}"
        const content = Buffer.from(`{"${field}":${open.repeat(depth)}1${close.repeat(depth)}}`)
        const { exit } = yield* decideCommand(delivery(content))
        if (Exit.isFailure(exit)) expect.fail(`processDelivery died or threw: ${Cause.squash(exit.cause)}`)
        expect(exit.value._tag).toBe("DeadLetter")
        const deadLetter = exit.value as Extract<Settlement, { _tag: "DeadLetter" }>
        expect(deadLetter.poison).toBe(true)
        const inner = expectPoisonReason(deadLetter.reason)
        // The schema's own description (naming the field), or, once too deep for it to describe, that.
        const described = new RegExp(`(^|; )${field}: `).test(inner)
        if (depth <= DESCRIBED_UP_TO_DEPTH) expect(described, inner.slice(0, 200)).toBe(true)
        else expect(described || inner === NESTED_TOO_DEEPLY, `depth ${depth}: ${inner.slice(0, 200)}`).toBe(true)
      }),
    { fastCheck: { numRuns: 30 } }
  )

  // How deep it takes depends on how warm the JIT is (some thousands); 30000 is past it either way.
  it("decodeCommand of a userId in 30000 nested arrays answers that it is nested too deeply, and does not throw", () => {
    const body = Buffer.from(`{"orderId":"${makeOrderId()}","userId":${"[".repeat(30_000)}${"]".repeat(30_000)}}`)
    let decoded: ReturnType<typeof decodeCommand> | undefined
    expect(() => (decoded = decodeCommand(body))).not.toThrow()
    expect(Either.isLeft(decoded!) && decoded.left).toBe(NESTED_TOO_DEEPLY)
  })

  it.effect.prop(
    "a poison body of any size up to the broker's frame: its dead letter's story still fits amqplib's header table",
    [fc.integer({ min: 1, max: 120_000 }), fc.constantFrom("orderId", "userId", "other")],
    ([size, field]) =>
      Effect.gen(function*() {
        const content = Buffer.from(JSON.stringify({ [field]: "x".repeat(size) }))
        const message = delivery(content, { messageId: "poison" })
        const { exit } = yield* decideCommand(message)
        if (Exit.isFailure(exit)) expect.fail(`processDelivery died: ${Cause.squash(exit.cause)}`)
        const deadLetter = exit.value as Extract<Settlement, { _tag: "DeadLetter" }>
        expect(deadLetter._tag).toBe("DeadLetter")
        // Bounded whatever the body's size: a reason quoting a 120 KB value is cut to its first 1000 characters.
        expectPoisonReason(deadLetter.reason)
        const copy = codec.decodeFields(encodeMovedCopy(message, deadLetter.reason, deadLetter.attempts))
        expect(copy["x-failure-reason"]).toBe(deadLetter.reason)
      }),
    { fastCheck: { numRuns: 40 } }
  )

  // Headers amqplib cannot produce, that another client (or a broker) can: written as raw table bytes.
  // The first two amqplib decodes but cannot encode again (2^64 - 1 comes back as the double 2^64; the
  // key's 255 bytes as 255 U+FFFD, 765 bytes in UTF-8), so their copy cannot be published: the move
  // fails, and the consumer rejects the delivery instead (requeue=false), so the broker dead-letters
  // it without our story. Nothing is lost, nothing acked. The other two are moved with their story.
  const rawHeaderTables: ReadonlyArray<[string, Buffer, "moved" | "rejected"]> = [
    ["a timestamp of 2^64 - 1", Buffer.concat([Buffer.from([1]), Buffer.from("tT"), Buffer.alloc(8, 0xff)]), "rejected"],
    ["a 255-byte key that is not UTF-8", Buffer.concat([Buffer.from([255]), Buffer.alloc(255, 0xff), Buffer.from("V")]), "rejected"],
    ["a long-long of -2^63", Buffer.concat([Buffer.from([1]), Buffer.from("ll"), Buffer.from([0x80, 0, 0, 0, 0, 0, 0, 0])]), "moved"],
    ["a string that is not UTF-8", Buffer.concat([Buffer.from([1]), Buffer.from("sS"), Buffer.from([0, 0, 0, 3, 0xc3, 0x28, 0xff])]), "moved"]
  ]
  const REASON = "not a valid SendNotificationCommand (...)"
  for (const [what, table, fate] of rawHeaderTables) {
    if (fate === "moved") {
      it.scopedLive(`a poison message with ${what} in its headers: dead-lettered with its story, acked only once the copy is confirmed`, () =>
        Effect.gen(function*() {
          const message = delivery(Buffer.from("not json"), { messageId: "poison", headers: codec.decodeFields(table) })
          const copy = codec.decodeFields(encodeMovedCopy(message, REASON, deliveryAttempt(message)))
          expect(copy).toMatchObject({ "x-failure-reason": REASON, "x-original-queue": "q" })

          // Through QueueConsumer itself: the copy goes out, and the delivery is acked after its confirm, not before.
          const rig = yield* consumerRig(REASON)
          rig.deliver(message)
          yield* until(() => rig.written.length > 0, "the copy written")
          expect(rig.published.map(([, routingKey, , options]) => [routingKey, options.headers["x-failure-reason"]])).toEqual([["q.dlq", REASON]])
          yield* Effect.sleep("50 millis")
          expect(rig.settled, "settled before the broker confirmed the copy").toEqual([])
          rig.confirmChannel.emit("ack", { deliveryTag: 1, multiple: false })
          yield* until(() => rig.settled.length > 0, "the delivery settled")
          yield* Effect.sleep("20 millis")
          expect(rig.settled).toEqual([{ outcome: "ack", deliveryTag: message.fields.deliveryTag }])
        }).pipe(Effect.provide(logs.layer)))
    } else {
      it.scopedLive(`a poison message with ${what} in its headers: its copy cannot be encoded, so it is rejected (requeue=false) for the broker to dead-letter without its story`, () =>
        Effect.gen(function*() {
          const message = delivery(Buffer.from("not json"), { messageId: "poison", headers: codec.decodeFields(table) })
          // The story itself is made; amqplib's encoder is what refuses the headers.
          const headers = copyOptions(message, withFailure(message, { reason: REASON, attempts: 1, failedAt: new Date(), queue: "q" }, Date.now())).headers
          expect(() => encodeHeaders(headers as Record<string, unknown>)).toThrow(RangeError)

          // Through QueueConsumer itself: the publish throws inside ConfirmedPublisher.publishConfirmed's
          // try/catch (a PublishFailed), move's catchAll rejects the delivery; nothing is written, acked or left pending.
          const rig = yield* consumerRig(REASON)
          logs.lines.length = 0
          rig.deliver(message)
          yield* until(() => rig.settled.length > 0, "the delivery settled")
          yield* Effect.sleep("50 millis")
          expect(rig.settled).toEqual([{ outcome: "reject", requeue: false, deliveryTag: message.fields.deliveryTag }])
          expect(rig.written).toEqual([])
          expect(rig.confirmChannel.unconfirmed).toEqual([])
          expect(logs.lines.filter((line) => line.startsWith("Could not move the message to q.dlq"))).toEqual([
            expect.stringMatching(/^Could not move the message to q\.dlq \(.*The value of "value" is out of range\..*\); rejected it to the dead-letter queue without its story instead$/)
          ])
          expect(logs.lines.filter((line) => /unexpectedly|defect/i.test(line))).toEqual([])
        }).pipe(Effect.provide(logs.layer)))
    }
  }
})

// ---------------------------------------------------------------------------------------------
// A QueueConsumer on a connection of our own making: deliveries handed to it by hand, its moves
// published on a real amqplib confirm channel whose frames go nowhere (encoded all the same, as for
// the socket), and confirmed by hand.

const amqplibRequire = createRequire(import.meta.url)
const { ConfirmChannel } = amqplibRequire("../../node_modules/amqplib/lib/channel_model.js") as {
  readonly ConfirmChannel: new(connection: unknown) => amqp.ConfirmChannel & { ch: number; unconfirmed: Array<unknown> }
}
const { Connection } = amqplibRequire("../../node_modules/amqplib/lib/connection.js") as {
  readonly Connection: { readonly prototype: { readonly sendMessage: (...args: ReadonlyArray<unknown>) => unknown } }
}

const logs = recordingLogger()

type Settled =
  | { readonly outcome: "ack"; readonly deliveryTag: number }
  | { readonly outcome: "reject"; readonly requeue: boolean; readonly deliveryTag: number }

const until = (check: () => boolean, what: string) =>
  Effect.gen(function*() {
    for (let i = 0; i < 200 && !check(); i++) yield* Effect.sleep("10 millis")
    if (!check()) return yield* Effect.dieMessage(`timed out waiting for ${what}`)
  })

/** consumeQueue on `q`, every delivery dead-lettered as poison with `reason`, ready for `deliver`. */
const consumerRig = (reason: string) =>
  Effect.gen(function*() {
    const written: Array<Buffer> = []
    const settled: Array<Settled> = []
    const published: Array<[string, string, Buffer, amqp.Options.Publish & { headers: Record<string, unknown> }]> = []
    // amqplib's own publish path down to its frame encoder (Connection#sendMessage), writing into `written`.
    const confirmChannel = new ConfirmChannel({
      channels: { 1: { buffer: { write: (frame: Buffer) => written.push(frame) > 0 } } },
      sendMessage: Connection.prototype.sendMessage
    })
    confirmChannel.ch = 1
    const publish = confirmChannel.publish.bind(confirmChannel)
    confirmChannel.publish = (...args: Parameters<amqp.ConfirmChannel["publish"]>) => {
      published.push([args[0], args[1], args[2], args[3] as (typeof published)[number][3]])
      return publish(...args)
    }
    confirmChannel.close = () => Promise.resolve(void confirmChannel.emit("close"))
    let onDelivery: ((message: amqp.Message | null) => void) | undefined
    const channel = Object.assign(new EventEmitter(), {
      prefetch: () => Promise.resolve(),
      consume: (_queue: string, callback: (message: amqp.Message | null) => void) => {
        onDelivery = callback
        return Promise.resolve({ consumerTag: "c" })
      },
      cancel: () => Promise.resolve(),
      close: () => Promise.resolve(),
      ack: (message: amqp.Message) => void settled.push({ outcome: "ack", deliveryTag: message.fields.deliveryTag }),
      reject: (message: amqp.Message, requeue: boolean) =>
        void settled.push({ outcome: "reject", requeue, deliveryTag: message.fields.deliveryTag })
    })
    const model = Object.assign(new EventEmitter(), {
      createChannel: () => Promise.resolve(channel),
      createConfirmChannel: () => Promise.resolve(confirmChannel)
    }) as unknown as amqp.ChannelModel
    const connection = AmqpConnection.of({
      state: yield* SubscriptionRef.make(Option.some(model)),
      blockedBy: () => undefined,
      withEveryConnection: (session) => Effect.zipRight(Effect.orDie(Effect.scoped(session(model))), Effect.never)
    })
    yield* consumeQueue({
      queue: "q",
      prefetch: 10,
      topology: [],
      handle: (message) => Effect.succeed(Settlement.DeadLetter({ reason, poison: true, attempts: deliveryAttempt(message) })),
      settled: () => Effect.void,
      shutdownTimeout: Duration.seconds(1),
      publishTimeout: Duration.seconds(2)
    }).pipe(Effect.provideService(AmqpConnection, connection))
    // Subscribed, and the confirm channel open for the moves (a move without one would be rejected too).
    yield* until(() => onDelivery !== undefined && confirmChannel.listenerCount("return") > 0, "the consumer ready")
    return { written, settled, published, confirmChannel, deliver: (message: amqp.Message) => onDelivery!(message) }
  })

// ---------------------------------------------------------------------------------------------
// 5. Events.

const eventFields = fc.record({
  orderId: Arbitrary.make(Schema.UUID),
  userId: fc.integer({ min: 1 }),
  sentAt: fc.date({ noInvalidDate: true, min: new Date(0), max: new Date(Date.UTC(9999, 0)) }),
  failedAt: fc.date({ noInvalidDate: true, min: new Date(0), max: new Date(Date.UTC(9999, 0)) }),
  reason: hostileString(80),
  attempts: fc.integer({ min: 1, max: 100 })
})

/**
 * Events as a publisher may send them, the failure's reason any text at all: built without the
 * class's validation (`true`), which would refuse a reason holding a NUL or a lone surrogate, so
 * that such a reason goes over the wire (JSON carries both, as "\u0000" and "\ud800").
 */
const validEvent = fc.tuple(eventFields, fc.boolean()).map(([f, sent]): NotificationEvent =>
  sent
    ? new NotificationSentEvent({ orderId: f.orderId as OrderId, userId: UserId.make(f.userId), sentAt: f.sentAt })
    : new NotificationFailedEvent({
      orderId: f.orderId as OrderId,
      userId: UserId.make(f.userId),
      reason: f.reason,
      attempts: f.attempts,
      failedAt: f.failedAt
    }, true)
)

/** Whether the contract lets the event through: a failure's reason must be StorableText (no NUL, no lone surrogate). */
const isStorableEvent = (event: NotificationEvent) => !(event instanceof NotificationFailedEvent) || isStorableText(event.reason)

/**
 * The event as our publisher sends it (`encodeEvent`); for a reason `encodeEvent` refuses to encode
 * (a NUL, a lone surrogate), the same with that reason written into the JSON body by hand.
 */
const publishedAs = (event: NotificationEvent) => {
  if (isStorableEvent(event)) return encodeEvent(event, undefined)
  const failed = event as NotificationFailedEvent
  const published = encodeEvent(new NotificationFailedEvent({ ...failed, reason: "" }), undefined)
  return { ...published, content: Buffer.from(JSON.stringify({ ...JSON.parse(published.content.toString()), reason: failed.reason })) }
}

/** An event delivery: a valid one as published, the same tampered with, or anything at all. */
const eventDelivery = fc.oneof(
  { weight: 3, arbitrary: validEvent.map((event) => ({ ...publishedAs(event), event, tampered: false })) },
  {
    weight: 3,
    arbitrary: fc.tuple(validEvent, commandBody, properties, fc.constantFrom("body", "type", "messageId", "all")).map(
      ([event, body, props, what]) => {
        const published = publishedAs(event)
        return {
          ...published,
          event,
          content: what === "body" || what === "all" ? body : published.content,
          options: {
            ...published.options,
            ...(what === "type" || what === "all" ? { type: props.type } : {}),
            ...(what === "messageId" || what === "all" ? { messageId: props.messageId } : {}),
            headers: props.headers
          },
          tampered: true
        }
      }
    )
  },
  {
    weight: 1,
    arbitrary: fc.tuple(validEvent, fc.dictionary(hostileString(10), fc.jsonValue({ maxDepth: 2 }), { minKeys: 1, maxKeys: 3 })).map(
      ([event, extra]) => {
        const published = publishedAs(event)
        return {
          ...published,
          event,
          content: Buffer.from(JSON.stringify({ ...extra, ...JSON.parse(published.content.toString()) })),
          tampered: false
        }
      }
    )
  }
)

describe("a delivery on the events queue, of any body and properties", () => {
  it.prop(
    "decodes to the event published, or to a reason; never a throw; never a NUL or lone surrogate in what it lets through",
    [eventDelivery],
    ([{ content, event, options, tampered }]) => {
      const message = delivery(content, options as Partial<amqp.MessageProperties>)
      let decoded: ReturnType<typeof decodeEvent>
      try {
        decoded = decodeEvent(message)
      } catch (error) {
        return expect.fail(`decodeEvent threw ${String(error)}`)
      }
      const { type, messageId } = options as { type?: unknown; messageId?: unknown }
      const knownType = type === "NotificationSent" || type === "NotificationFailed"
      // A messageId the store could not keep exactly is refused, whatever the body.
      if (knownType && typeof messageId === "string" && messageId !== "" && !isStorableText(messageId)) {
        expect(decoded).toEqual(Either.left("the event's messageId holds a NUL or a lone surrogate"))
        return
      }
      if (Either.isLeft(decoded)) {
        if (!tampered) {
          // An event as published is refused only for its reason: text the store cannot keep.
          expect(isStorableEvent(event), `refused an untampered event: ${decoded.left}`).toBe(false)
          expect(decoded.left).toMatch(/^not a valid NotificationFailed \(.*\breason: must be text without NUL or lone surrogates/)
        }
        return
      }
      expect(tampered || isStorableEvent(event), "let a reason with a NUL or a lone surrogate through").toBe(true)
      // Only a known type, with a messageId, whose body is that type's.
      expect(knownType).toBe(true)
      expect(typeof messageId === "string" && messageId !== "").toBe(true)
      expect(decoded.right.eventId).toBe(messageId)
      expect(isStorableText(decoded.right.eventId)).toBe(true)
      const body = JSON.parse(content.toString("utf8"))
      expect(decoded.right.event.orderId).toBe(body.orderId)
      expect(decoded.right.event).toBeInstanceOf(type === "NotificationSent" ? NotificationSentEvent : NotificationFailedEvent)
      const received = decoded.right.event
      if (received instanceof NotificationFailedEvent) {
        expect(isStorableText(received.reason), JSON.stringify(received.reason)).toBe(true)
        expect(received.reason).toBe(body.reason)
      }
    },
    { fastCheck: { numRuns: 400 } }
  )

  it.prop(
    "the reason for a broken event is one line and bounded, whatever control characters or lone surrogates its body holds (it is logged, and put in a header)",
    [eventDelivery],
    ([{ content, options }]) => {
      const decoded = decodeEvent(delivery(content, options as Partial<amqp.MessageProperties>))
      if (Either.isLeft(decoded)) expectOneLineReason(decoded.left)
    },
    { fastCheck: { numRuns: 300 } }
  )

  it.prop(
    "an event body nested up to 30000 deep: a reason, never a throw",
    [fc.integer({ min: 1, max: 30_000 })],
    ([depth]) => {
      const content = Buffer.from(`{"orderId":${"[".repeat(depth)}${"]".repeat(depth)}}`)
      let decoded: ReturnType<typeof decodeEvent> | undefined
      expect(() => (decoded = decodeEvent(delivery(content, { type: "NotificationSent", messageId: "e" })))).not.toThrow()
      expect(Either.isLeft(decoded!)).toBe(true)
      const reason = (decoded as Either.Left<string, never>).left
      expectOneLineReason(reason)
      // The schema's own description, or, once too deep for it to describe, that.
      const described = reason.startsWith("not a valid NotificationSent (orderId: Expected string, actual [")
      if (depth <= DESCRIBED_UP_TO_DEPTH) expect(described, reason.slice(0, 200)).toBe(true)
      else expect(described || reason === NESTED_TOO_DEEPLY, `depth ${depth}: ${reason.slice(0, 200)}`).toBe(true)
    },
    { fastCheck: { numRuns: 30 } }
  )

  // How deep it takes depends on how warm the JIT is (some thousands); 30000 is past it either way.
  it("an event body nested 30000 deep: refused as nested too deeply, not a throw", () => {
    const content = Buffer.from(`{"orderId":${"[".repeat(30_000)}${"]".repeat(30_000)}}`)
    expect(decodeEvent(delivery(content, { type: "NotificationFailed", messageId: "e" }))).toEqual(Either.left(NESTED_TOO_DEEPLY))
  })
})

// ---------------------------------------------------------------------------------------------
// 5. Status only moves forward, whatever order the facts arrive in.

const RANK: Record<OrderStatus, number> = { accepted: 0, queued: 1, failed: 2, notified: 3 }

type Fact =
  | { readonly _tag: "Queued" }
  | { readonly _tag: "Sent"; readonly eventId: string; readonly sentAt: number }
  | { readonly _tag: "Failed"; readonly eventId: string; readonly failedAt: number; readonly reason: string; readonly attempts: number }

const statusOf = (facts: ReadonlyArray<Fact>): OrderStatus =>
  facts.some((f) => f._tag === "Sent")
    ? "notified"
    : facts.some((f) => f._tag === "Failed")
    ? "failed"
    : facts.some((f) => f._tag === "Queued")
    ? "queued"
    : "accepted"

/** Distinct facts for one order (failure times distinct, so the latest is one), some delivered twice, shuffled. */
const factSequence = fc.tuple(
  fc.nat({ max: 2 }),
  fc.uniqueArray(fc.integer({ min: 1, max: 4_000_000_000_000 }), { maxLength: 3 }),
  fc.uniqueArray(fc.integer({ min: 1, max: 4_000_000_000_000 }), { maxLength: 3 }),
  // A reason reaches the store only from a decoded event: StorableText (no NUL, no lone surrogate;
  // decodeEvent refuses the others, the consumer dead-letters them). Other text, and the store's own
  // handling of it, is test/integration/hostileStrings.test.ts's.
  fc.array(fc.tuple(fc.string({ unit: fc.oneof(fc.string({ unit: "grapheme", minLength: 1, maxLength: 1 }), fc.constantFrom("\u0001", "\u007f", "'", "\"", "\\", "\n", "😀")), maxLength: 40 }).filter(isStorableText), fc.integer({ min: 1, max: 50 })), { minLength: 3, maxLength: 3 }),
  fc.array(fc.nat(), { maxLength: 4 })
).chain(([queued, sentAts, failedAts, failures, duplicates]) => {
  const facts: Array<Fact> = [
    ...Array.from({ length: queued }, (): Fact => ({ _tag: "Queued" })),
    ...sentAts.map((sentAt, i): Fact => ({ _tag: "Sent", eventId: `sent-${i}`, sentAt })),
    ...failedAts.map((failedAt, i): Fact => ({
      _tag: "Failed",
      eventId: `failed-${i}`,
      failedAt,
      reason: failures[i]![0],
      attempts: failures[i]![1]
    }))
  ]
  const redelivered = facts.length === 0 ? [] : duplicates.map((n) => facts[n % facts.length]!)
  return fc.shuffledSubarray([...facts, ...redelivered], { minLength: facts.length + redelivered.length })
})

const sqliteStore = Layer.unwrapScoped(
  Effect.map(temporaryFolder, (folder) =>
    OrderStore.Default.pipe(Layer.provideMerge(databaseLayer(DatabaseTarget.Sqlite({ filename: join(folder, "orders.db") })))))
)

/** Rank order as the contract states it, checked after every fact applied, and the end state exactly. */
const statusProperty = (facts: ReadonlyArray<Fact>) =>
  Effect.gen(function*() {
    const store = yield* OrderStore
    const orderId = makeOrderId()
    // Event ids are unique across the whole database, so this order's are made its own.
    const eventId = (id: string) => `${orderId}/${id}`
    yield* store.createOrder({ orderId, userId: UserId.make(1), body: "{}", headers: undefined, idempotency: Option.none() })
    const applied: Array<Fact> = []
    let previous: OrderStatus = "accepted"
    for (const fact of facts) {
      switch (fact._tag) {
        case "Queued":
          yield* store.markQueued([orderId])
          break
        case "Sent":
          yield* store.applyNotificationSent({ eventId: eventId(fact.eventId), orderId, sentAt: new Date(fact.sentAt) })
          break
        case "Failed":
          yield* store.applyNotificationFailed({
            eventId: eventId(fact.eventId),
            orderId,
            reason: fact.reason,
            attempts: fact.attempts,
            failedAt: new Date(fact.failedAt)
          })
      }
      applied.push(fact)
      const order = Option.getOrThrow(yield* store.findOrder(orderId))
      expect(RANK[order.status], `${previous} -> ${order.status}`).toBeGreaterThanOrEqual(RANK[previous])
      expect(order.status).toBe(statusOf(applied))
      previous = order.status
    }
    const order = Option.getOrThrow(yield* store.findOrder(orderId))
    const sent = new Map(facts.flatMap((f) => (f._tag === "Sent" ? [[f.eventId, f.sentAt] as const] : [])))
    const failed = facts.filter((f): f is Extract<Fact, { _tag: "Failed" }> => f._tag === "Failed")
    expect(order.status).toBe(statusOf(facts))
    expect(order.notifications).toBe(sent.size)
    expect(Option.map(order.notifiedAt, (d) => d.getTime())).toEqual(
      sent.size === 0 ? Option.none() : Option.some(Math.min(...sent.values()))
    )
    expect(Option.isSome(order.queuedAt)).toBe(facts.some((f) => f._tag === "Queued"))
    if (failed.length === 0) {
      expect(order.failure).toEqual(Option.none())
    } else {
      const latest = failed.reduce((a, b) => (b.failedAt > a.failedAt ? b : a))
      expect(Option.getOrThrow(order.failure)).toEqual({
        reason: latest.reason,
        attempts: latest.attempts,
        failedAt: new Date(latest.failedAt)
      })
    }
  })

layer(sqliteStore)("an order's facts, in any order (SQLite store)", (it) => {
  it.effect.prop(
    "status only moves forward and ends at the highest rank of its facts; duplicates change nothing; the latest failure is kept",
    [factSequence],
    ([facts]) => Effect.zipRight(TestClock.adjust("1 millis"), statusProperty(facts)),
    { fastCheck: { numRuns: 150 } }
  )

  it.effect("every order row and event row is intact afterwards", () =>
    Effect.gen(function*() {
      const sql = yield* SqlClient.SqlClient
      const [orders] = yield* sql<{ n: number }>`SELECT COUNT(*) AS n FROM orders`
      expect(Number(orders!.n)).toBeGreaterThan(0)
    }))
})
