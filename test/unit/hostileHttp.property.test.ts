import {
  Headers,
  HttpApp,
  HttpClient,
  HttpClientRequest,
  HttpServer,
  HttpServerRequest,
  HttpServerResponse
} from "@effect/platform"
import { NodeHttpServer } from "@effect/platform-node"
import * as SqlClient from "@effect/sql/SqlClient"
import { expect, layer } from "@effect/vitest"
import { Arbitrary, Context, Deferred, Effect, Either, FastCheck as fc, Layer, Option, Schema, TestServices } from "effect"
import { join } from "node:path"
import { OrderId, UserId } from "../../src/domain/Order"
import { uuidv7 } from "../../src/domain/uuidv7"
import { HttpRoutes } from "../../src/order/Http"
import { CreateOrderRequest, Cursor } from "../../src/order/OrderApi"
import { Orders } from "../../src/order/Orders"
import { databaseLayer, DatabaseTarget } from "../../src/order/store/Database"
import { OrderStore } from "../../src/order/store/OrderStore"
import { relayDouble, withEnv } from "../support/orderDoubles"
import { temporaryFolder } from "../support/services"

/**
 * Hostile input, generated, against the order API in-process (contract §4): whatever a client
 * sends, the answer is a 201 for a valid request only (and that order reads back), or a 4xx with a
 * one-line JSON `{"_tag", "message"}`; never a 500, never a crash, never a row that does not decode.
 *
 * Two harnesses. Bodies go through the real Node server of `NodeHttpServer.layerTest` (so Node
 * parses them as in production). Headers and URLs go in-process, straight into the app the routes
 * serve (`HttpServer` replaced by one that hands the app over), because Node's client refuses to
 * send many of the values a property wants to try; what the Node server itself would let through is
 * tried over the socket too.
 */

type Json = Record<string, any>

interface Answer {
  readonly status: number
  readonly headers: Record<string, string>
  readonly text: string
}

// ---------------------------------------------------------------------------------------------
// The app, twice: behind the Node test server, and in-process.

/** The real store on a SQLite file of its own, and its SQL client, to look at the rows themselves. */
const sqliteStore = Layer.unwrapScoped(
  Effect.map(temporaryFolder, (folder) =>
    OrderStore.Default.pipe(Layer.provideMerge(databaseLayer(DatabaseTarget.Sqlite({ filename: join(folder, "orders.db") })))))
)

/** The order API's routes behind `server`, with the real SQLite store and a relay double. */
const orderRoutes = <A, E, R>(server: Layer.Layer<A, E, R>, env: Record<string, string> = {}) =>
  HttpRoutes.pipe(
    Layer.provide(Orders.Default),
    Layer.provideMerge(sqliteStore),
    Layer.provideMerge(relayDouble().layer),
    Layer.provideMerge(server),
    Layer.provide(withEnv(env))
  )

interface InProcessRequest {
  readonly method: "GET" | "POST" | "PUT" | "DELETE"
  /** Exactly what the router sees as the request target, whatever it contains. */
  readonly url: string
  /** Exactly what the app sees as the request's headers (names lowercase, as Node gives them). */
  readonly headers?: Record<string, string>
  readonly body?: string | Uint8Array
}

/** Sends a request straight into the app the order routes serve, past any client or parser. */
class InProcess extends Context.Tag("test/InProcess")<InProcess, {
  readonly send: (request: InProcessRequest) => Effect.Effect<Answer>
}>() {}

/** Node would refuse to write a header value with other characters (ERR_INVALID_CHAR). */
const NODE_HEADER_VALUE = /^[\t\x20-\x7e\x80-\xff]*$/

const bodyTextOf = (response: HttpServerResponse.HttpServerResponse) =>
  response.body._tag === "Uint8Array"
    ? Effect.succeed(new TextDecoder().decode(response.body.body))
    : response.body._tag === "Empty"
    ? Effect.succeed("")
    : Effect.promise(() => HttpServerResponse.toWeb(response).text())

/**
 * An `HttpServer` that serves nothing on a socket: it hands the app (with the middleware and the
 * context it was served with) to `InProcess`, which runs it as the Node server would
 * (`HttpApp.toHandled`: the same error answers, pre-response handlers and middleware).
 */
const inProcessServer = Layer.unwrapEffect(Effect.gen(function*() {
  type Handler = (request: HttpServerRequest.HttpServerRequest) => Effect.Effect<HttpServerResponse.HttpServerResponse>
  const served = yield* Deferred.make<Handler>()
  const server = HttpServer.make({
    address: { _tag: "TcpAddress", hostname: "in-process", port: 0 },
    serve: (app, middleware) =>
      Effect.flatMap(Effect.context<never>(), (context) =>
        Deferred.succeed(served, (request) =>
          Effect.suspend(() => {
            let answered: HttpServerResponse.HttpServerResponse | undefined
            return HttpApp.toHandled(app, (_, response) => Effect.sync(() => void (answered = response)), middleware).pipe(
              Effect.provideService(HttpServerRequest.HttpServerRequest, request),
              Effect.provide(context),
              Effect.flatMap(() => answered === undefined ? Effect.dieMessage("the app gave no answer") : Effect.succeed(answered))
            )
          })))
  })
  const send = (input: InProcessRequest) =>
    Effect.gen(function*() {
      const handle = yield* Deferred.await(served)
      const web = new Request("http://in-process/", {
        method: input.method,
        ...(input.body === undefined ? {} : { body: input.body })
      })
      const request = HttpServerRequest.fromWeb(web).modify({
        url: input.url,
        headers: Headers.unsafeFromRecord(input.headers ?? {})
      })
      const response = yield* handle(request)
      const headers: Record<string, string> = {}
      for (const [name, value] of Object.entries(response.headers)) headers[name] = String(value)
      return { status: response.status, headers, text: yield* bodyTextOf(response) }
    })
  return Layer.mergeAll(Layer.succeed(HttpServer.HttpServer, server), Layer.succeed(InProcess, { send }))
})).pipe(Layer.provideMerge(NodeHttpServer.layerContext))

// ---------------------------------------------------------------------------------------------
// What every answer must be.

const parseJsonOrUndefined = (text: string): unknown => {
  try {
    return JSON.parse(text)
  } catch {
    return undefined
  }
}

/**
 * Never a 5xx here (the store and the relay double are up); a 4xx is JSON `{"_tag","message"}` in
 * one line. `echoed`: the raw input, when the message may quote it (a 404 names the URL it got): a
 * line break in it may show there, since Node itself never delivers one (its parser refuses it).
 */
const expectSaneAnswer = (answer: Answer, allowed: ReadonlyArray<number>, echoed = "") => {
  expect(answer.status, `answer: ${answer.status} ${answer.text.slice(0, 300)}`).toBeOneOf([...allowed])
  for (const [name, value] of Object.entries(answer.headers)) {
    expect(NODE_HEADER_VALUE.test(value), `header ${name} is not writable by Node: ${JSON.stringify(value)}`).toBe(true)
  }
  expect(answer.headers["content-type"] ?? "").toContain("application/json")
  const body = parseJsonOrUndefined(answer.text) as Json | undefined
  expect(body, `not JSON: ${answer.text.slice(0, 300)}`).toBeTypeOf("object")
  if (answer.status >= 400) {
    expect(body).toMatchObject({ _tag: expect.any(String), message: expect.any(String) })
    if (!/[\r\n]/.test(echoed)) expect(body!.message).not.toMatch(/[\r\n]/)
    expect(answer.text).not.toMatch(/\n\s+at /)
  }
  return body!
}

const decodeCreateOrder = Schema.decodeUnknownEither(CreateOrderRequest)

/** What the contract says of a body: valid JSON that the request schema accepts. */
const validBody = (text: string): Option.Option<{ readonly userId: number }> => {
  const json = parseJsonOrUndefined(text)
  return json === undefined ? Option.none() : Either.getRight(decodeCreateOrder(json))
}

// ---------------------------------------------------------------------------------------------
// Generators.

/** One UTF-16 code unit or code point of any kind, with the usual troublemakers weighted in. */
const hostileChar = fc.oneof(
  { weight: 4, arbitrary: fc.string({ unit: "binary", minLength: 1, maxLength: 1 }) },
  { weight: 1, arbitrary: fc.string({ unit: "grapheme", minLength: 1, maxLength: 1 }) },
  {
    weight: 3,
    arbitrary: fc.constantFrom(
      "\u0000", "\u0001", "\u001f", "\t", "\n", "\r", "\u007f", "\u0085", "\u00a0", "\u00e9", "\u00ff", "\u0100",
      "\u2028", "\u202e", "\ufeff", "\ufffd", "\ud800", "\udbff", "\udc00", "\udfff", "😀", "👩‍👩‍👧", "'", "\"", "\\",
      "%", "%00", "%zz", "%e9", "%C3%A9", "%ED%A0%80", "/", "?", "#", "&", "=", "+", " ", ";", ",", ":", "@", "..", "*", "$"
    )
  }
)
const hostileString = (constraints: { readonly minLength?: number; readonly maxLength: number }) =>
  fc.string({ unit: hostileChar, ...constraints })

/** A JSON value of any shape, via `fc.anything` (whose Dates, typed arrays and sparse arrays JSON flattens). */
const anythingAsJson = fc.anything({
  withBigInt: false,
  withBoxedValues: true,
  withDate: true,
  withMap: true,
  withSet: true,
  withNullPrototype: true,
  withObjectString: true,
  withSparseArray: true,
  withTypedArray: true,
  withUnicodeString: true,
  maxDepth: 4
}).map((value) => JSON.stringify(value) ?? "undefined")

/** Number literals JSON allows, that a JavaScript number cannot hold or that look like integers. */
const numberLiteral = fc.oneof(
  fc.constantFrom(
    "1e400", "-1e400", "1e-400", "-0", "0", "0.0", "1.0", "1E0", "4.2e1", "42.000000000000001", "9007199254740991",
    "9007199254740992", "9007199254740993", "-9007199254740991", "123456789012345678901234567890", "0.1e1", "5e-324"
  ),
  fc.bigInt({ min: -(10n ** 30n), max: 10n ** 30n }).map(String),
  fc.double().map((n) => JSON.stringify(n)),
  fc.integer().map(String)
)

/** `{"userId": ...}` with every kind of value in it, now and then with company. */
const userIdBody = fc.tuple(
  fc.oneof(numberLiteral, fc.jsonValue().map((v) => JSON.stringify(v)), anythingAsJson),
  fc.option(fc.dictionary(hostileString({ maxLength: 8 }), fc.jsonValue({ maxDepth: 2 }), { maxKeys: 3 }))
).map(([value, extra]) =>
  extra === null ? `{"userId":${value}}` : `{"userId":${value},${JSON.stringify(extra).slice(1, -1) || "\"x\":1"}}`
)

/** Valid bodies, from the request's own schema: these must be accepted. */
const schemaBody = Arbitrary.make(CreateOrderRequest).map((request) => JSON.stringify(Schema.encodeSync(CreateOrderRequest)(request)))

const jsonText = fc.oneof(
  { weight: 3, arbitrary: userIdBody },
  { weight: 2, arbitrary: schemaBody },
  { weight: 2, arbitrary: fc.jsonValue().map((v) => JSON.stringify(v)) },
  { weight: 2, arbitrary: anythingAsJson },
  // Strings of every kind, as JSON escapes them and as they are, NUL and lone surrogates included.
  { weight: 1, arbitrary: hostileString({ maxLength: 40 }).map((s) => `{"userId":${JSON.stringify(s)}}`) },
  { weight: 1, arbitrary: hostileString({ maxLength: 40 }).map((s) => `{"userId":"${s}"}`) },
  { weight: 1, arbitrary: hostileString({ maxLength: 40 }).map((s) => `{${JSON.stringify(s)}:1,"userId":1}`) }
)

/**
 * A userId nested `depth` levels deep in arrays, objects or both (past 64 KiB, a 413). The
 * property is given the depth and kind, not the text, so that a counterexample reads in one line.
 */
const nesting = fc.tuple(fc.integer({ min: 1, max: 30_000 }), fc.constantFrom("array" as const, "object" as const, "mixed" as const))
const nestedBody = ([depth, kind]: readonly [number, "array" | "object" | "mixed"]) => {
  const open = kind === "array" ? "[" : kind === "object" ? "{\"a\":" : "[{\"a\":"
  const close = kind === "array" ? "]" : kind === "object" ? "}" : "}]"
  const levels = kind === "mixed" ? Math.ceil(depth / 2) : depth
  return `{"userId":${open.repeat(levels)}1${close.repeat(levels)}}`
}

const encoder = new TextEncoder()

// ---------------------------------------------------------------------------------------------
// 1. POST /orders bodies, over the Node test server.

/** How long an answer may take: a request the server never answers fails the property, not the test's timeout. */
const ANSWER_WITHIN = "2 seconds"

const postBody = (body: Uint8Array, contentType: string, path = "/orders") =>
  HttpClientRequest.post(path).pipe(
    HttpClientRequest.bodyUint8Array(body, contentType),
    HttpClient.execute,
    Effect.flatMap((response) =>
      Effect.map(response.text, (text): Answer => ({ status: response.status, headers: response.headers, text }))
    ),
    Effect.scoped,
    // On the real clock: the tests run on the TestClock, which would never time out.
    Effect.timeoutFail({
      duration: ANSWER_WITHIN,
      onTimeout: () => new Error(`no answer within ${ANSWER_WITHIN} to a POST ${path} of ${JSON.stringify(contentType)}`)
    }),
    TestServices.provideLive
  )

const getPath = (path: string) =>
  HttpClient.get(path).pipe(
    Effect.flatMap((response) =>
      Effect.map(response.text, (text): Answer => ({ status: response.status, headers: response.headers, text }))
    ),
    Effect.scoped
  )

/**
 * A 201 only for a valid body, and then an order that reads back as it was answered; with
 * `mustAccept` (sent as the contract says, application/json), a 201 for every valid body too.
 */
const postAndCheck = (text: string | Uint8Array, contentType: string, mustAccept: boolean) =>
  Effect.gen(function*() {
    const bytes = typeof text === "string" ? encoder.encode(text) : text
    const answer = yield* postBody(bytes, contentType)
    const decodedText = new TextDecoder().decode(bytes)
    const valid = validBody(decodedText)
    const tooLarge = bytes.byteLength > 64 * 1024
    const body = expectSaneAnswer(answer, [201, 400, 413])
    if (answer.status === 201) {
      // Never accept what the schema refuses.
      expect(Option.isSome(valid), `accepted ${decodedText.slice(0, 200)}`).toBe(true)
      expect(body.order.userId).toBe(Option.getOrThrow(valid).userId)
      const read = yield* getPath(`/orders/${body.order.orderId}`)
      expect(read.status).toBe(200)
      expect(JSON.parse(read.text)).toEqual(body.order)
    } else if (mustAccept && Option.isSome(valid) && !tooLarge) {
      expect.fail(`refused a valid body with ${answer.status} ${answer.text}: ${decodedText.slice(0, 200)}`)
    }
    if (answer.status === 413) expect(tooLarge).toBe(true)
    return { answer, body }
  })

/** `postAndCheck` as a property's body (which must not return a value). */
const checkPost = (text: string | Uint8Array, contentType: string, mustAccept: boolean) =>
  Effect.asVoid(postAndCheck(text, contentType, mustAccept))

/** What every multipart body gets, on any route, before anything reads it (the platform would parse it). */
const UNSUPPORTED_MEDIA_TYPE = { _tag: "UnsupportedMediaType", message: expect.stringMatching(/multipart/) }

/** What a body nested too deep for Effect's issue formatter to describe gets. */
const NESTED_TOO_DEEPLY = { _tag: "MalformedRequest", message: "The request body is nested too deeply to decode" }

/** Below this depth a wrong body is described as any other is; past some thousands, it may be too deep to. */
const DESCRIBED_UP_TO_DEPTH = 500

const countOrders = Effect.flatMap(SqlClient.SqlClient, (sql) =>
  Effect.map(sql<{ n: number }>`SELECT COUNT(*) AS n FROM orders`, ([row]) => Number(row!.n)))

/** A multipart body on `path`: a 415 JSON at once (within ANSWER_WITHIN), storing nothing. */
const checkMultipart = (bytes: Uint8Array, contentType: string, path: string) =>
  Effect.gen(function*() {
    const before = yield* countOrders
    const answer = yield* postBody(bytes, contentType, path)
    const body = expectSaneAnswer(answer, [415])
    expect(body).toEqual(UNSUPPORTED_MEDIA_TYPE)
    expect(yield* countOrders).toBe(before)
  })

/** Every row the store holds decodes back: read each through the store, which dies on a row that does not. */
const everyStoredRowDecodes = Effect.gen(function*() {
  const sql = yield* SqlClient.SqlClient
  const store = yield* OrderStore
  const rows = yield* sql<{ order_id: string }>`SELECT order_id FROM orders`
  for (const { order_id } of rows) {
    const found = yield* store.findOrder(OrderId.make(order_id))
    expect(Option.isSome(found)).toBe(true)
  }
  const outbox = yield* store.claimOutbox(1_000_000)
  expect(outbox.length).toBe(rows.length)
  return rows.length
})

layer(orderRoutes(NodeHttpServer.layerTest))("POST /orders with hostile bodies (over the Node test server)", (it) => {
  it.effect.prop(
    "any JSON text as application/json: 201 exactly for a body the schema accepts, which then reads back; 400 JSON otherwise",
    [jsonText, fc.constantFrom("application/json", "application/json; charset=utf-8", "Application/JSON")],
    ([text, contentType]) => checkPost(text, contentType, true),
    { fastCheck: { numRuns: 200 } }
  )

  it.effect.prop(
    "bytes that are not JSON, not UTF-8, or JSON with a byte broken or cut short: 201 only if still a valid body, else 400 JSON",
    [
      fc.oneof(
        fc.uint8Array({ maxLength: 300 }),
        // JSON with one byte broken, cut short, or a raw control character in a string.
        schemaBody.chain((text) =>
          fc.tuple(fc.nat({ max: text.length }), fc.integer({ min: 0, max: 255 })).map(([at, byte]) => {
            const bytes = encoder.encode(text)
            return Uint8Array.from([...bytes.slice(0, at), byte, ...bytes.slice(at + 1)])
          })
        ),
        schemaBody.chain((text) => fc.nat({ max: text.length - 1 }).map((at) => encoder.encode(text.slice(0, at))))
      ),
      fc.constantFrom("application/json")
    ],
    ([bytes, contentType]) => checkPost(bytes, contentType, true),
    { fastCheck: { numRuns: 150 } }
  )

  it.effect.prop(
    "a valid or invalid body under the wrong content type: never 500, never an order that does not read back",
    [
      fc.oneof(jsonText.map((text) => encoder.encode(text)), fc.uint8Array({ maxLength: 200 }), fc.constant(new Uint8Array())),
      fc.constantFrom(
        "text/plain",
        "text/json",
        "application/x-www-form-urlencoded",
        "application/octet-stream",
        "application/xml",
        "application/vnd.api+json",
        "application/json-patch+json",
        "image/png",
        "*/*",
        "application/json; charset=utf-16le",
        "application/json; charset=\"",
        "x",
        ";;;"
      )
    ],
    ([bytes, contentType]) => checkPost(bytes, contentType, false),
    { fastCheck: { numRuns: 150 } }
  )

  it.effect.prop(
    "a multipart/* body, well-formed or not, on any route: 415 UnsupportedMediaType JSON at once, never 500, nothing stored",
    [
      fc.tuple(
        fc.constantFrom("", "xyz", "----b", "\"quoted\""),
        fc.oneof(
          fc.uint8Array({ maxLength: 200 }),
          fc.constantFrom("userId", "other").chain((name) =>
            fc.jsonValue().map((value) =>
              encoder.encode(`--xyz\r\nContent-Disposition: form-data; name="${name}"\r\n\r\n${JSON.stringify(value)}\r\n--xyz--\r\n`)
            )
          )
        )
      ),
      fc.constantFrom("multipart/form-data", "Multipart/Form-Data", "MULTIPART/mixed", "multipart/related", "multipart/x-anything"),
      fc.constantFrom("/orders", "/orders", "/orders/0190a2b4-8c1d-7e2f-9a3b-4c5d6e7f8091", "/nope", "/health/ready")
    ],
    ([[boundary, bytes], type, path]) => checkMultipart(bytes, `${type}${boundary === "" ? "" : `; boundary=${boundary}`}`, path),
    // A body the server never answers costs ANSWER_WITHIN a run: shrinking stops after 15 s, and reports.
    { fastCheck: { numRuns: 60, interruptAfterTimeLimit: 15_000, markInterruptAsFailure: true } }
  )

  it.effect.prop(
    "a userId nested up to 30000 deep: 400 JSON (HttpApiDecodeError, or MalformedRequest when too deep to describe), 413 past 64 KiB, never 500",
    [nesting],
    ([shape]) =>
      Effect.gen(function*() {
        const text = nestedBody(shape)
        // 201, 400 or 413, and sane; which of them, and which 400, is this.
        const { answer, body } = yield* postAndCheck(text, "application/json", true)
        if (encoder.encode(text).byteLength > 64 * 1024) {
          expect(answer.status).toBe(413)
          return
        }
        expect(answer.status, answer.text.slice(0, 200)).toBe(400)
        const [depth] = shape
        if (depth <= DESCRIBED_UP_TO_DEPTH) {
          expect(body).toMatchObject({ _tag: "HttpApiDecodeError", message: expect.stringMatching(/^userId: /) })
        } else {
          expect(body).toSatisfy(
            (b: Json) => b._tag === "HttpApiDecodeError" ? /^userId: /.test(b.message) : JSON.stringify(b) === JSON.stringify(NESTED_TOO_DEEPLY),
            `depth ${depth}: ${answer.text.slice(0, 200)}`
          )
        }
      }),
    { fastCheck: { numRuns: 40 } }
  )

  // How deep it takes depends on how warm the JIT is (some thousands); 30000 is past it either way.
  it.effect("a userId in 30000 nested arrays (60 KB): 400 MalformedRequest, too deeply nested to decode, not 500", () =>
    Effect.gen(function*() {
      const answer = yield* postBody(encoder.encode(`{"userId":${"[".repeat(30_000)}${"]".repeat(30_000)}}`), "application/json")
      expect({ status: answer.status, body: parseJsonOrUndefined(answer.text) }).toEqual({ status: 400, body: NESTED_TOO_DEEPLY })
      expect(answer.headers["content-type"]).toContain("application/json")
    }))

  // Before the 415, the first two were answered 500 and the last two not at all.
  const badMultipart: ReadonlyArray<[string, string, string]> = [
    ["not multipart at all", "not multipart at all", "multipart/form-data; boundary=xyz"],
    ["without a boundary parameter", "--xyz\r\nContent-Disposition: form-data; name=\"userId\"\r\n\r\n42\r\n--xyz--\r\n", "multipart/form-data"],
    ["empty", "", "multipart/form-data; boundary=xyz"],
    ["cut short after its first boundary", "--xyz\r\n", "multipart/form-data; boundary=xyz"]
  ]
  for (const [what, body, contentType] of badMultipart) {
    it.effect(`a multipart/form-data body ${what}: answered at once, 415 UnsupportedMediaType JSON`, () =>
      checkMultipart(encoder.encode(body), contentType, "/orders"))
  }

  it.effect("after all of that, every stored order decodes, and each has its command in the outbox", () =>
    Effect.map(everyStoredRowDecodes, (count) => expect(count).toBeGreaterThan(0)))
})

// ---------------------------------------------------------------------------------------------
// 2. The Idempotency-Key header, and 3. the order id and the list's parameters, in-process.

/** 1 to 255 visible ASCII characters: the contract's definition, written out again here. */
const isValidKey = (key: string) => key.length >= 1 && key.length <= 255 && [...key].every((c) => c >= "!" && c <= "~")

const keyArbitrary = fc.oneof(
  { weight: 3, arbitrary: hostileString({ maxLength: 300 }) },
  { weight: 3, arbitrary: fc.string({ unit: fc.integer({ min: 0x21, max: 0x7e }).map((c) => String.fromCharCode(c)), minLength: 1, maxLength: 300 }) },
  { weight: 1, arbitrary: fc.constantFrom("", " ", "k".repeat(255), "k".repeat(256), "a b", "a\u0000b", "clé", "'; DROP TABLE idempotency_keys; --") },
  // Visible ASCII with one hostile character put in.
  {
    weight: 2,
    arbitrary: fc.tuple(fc.string({ unit: fc.constantFrom("a", "Z", "9", "-", "~", "!"), minLength: 1, maxLength: 254 }), hostileChar, fc.nat())
      .map(([key, char, at]) => key.slice(0, at % (key.length + 1)) + char + key.slice(at % (key.length + 1)))
  }
)

/** A userId per run: the properties' orders never meet. */
let nextUserId = 1_000_000
const freshUserId = () => nextUserId++

const postWithKey = (key: string, userId: number) =>
  Effect.flatMap(InProcess, ({ send }) =>
    send({
      method: "POST",
      url: "/orders",
      headers: { "content-type": "application/json", "idempotency-key": key },
      body: JSON.stringify({ userId })
    }))

const getInProcess = (url: string, headers: Record<string, string> = {}) =>
  Effect.flatMap(InProcess, ({ send }) => send({ method: "GET", url, headers }))

const ordersOf = (userId: number) =>
  Effect.flatMap(OrderStore, (store) => store.listOrders({ userId: UserId.make(userId), limit: 100, before: Option.none() }))

layer(orderRoutes(inProcessServer))("hostile headers and URLs (in-process)", (it) => {
  it.effect("the in-process harness answers as the server does", () =>
    Effect.gen(function*() {
      const created = yield* postWithKey("harness-check", 7)
      expect(created.status).toBe(201)
      const { order } = JSON.parse(created.text)
      expect(created.headers["location"]).toBe(`/orders/${order.orderId}`)
      expect((yield* getInProcess(`/orders/${order.orderId}`)).status).toBe(200)
      expect((yield* getInProcess("/nope")).status).toBe(404)
    }))

  /** Keys already used by an earlier run, with the userId they were used with. */
  const usedKeys = new Map<string, { readonly userId: number; readonly orderId: string }>()

  it.effect.prop(
    "Idempotency-Key of any string, 0 to 300 long: 201 (and a replay gets the same order) exactly for 1 to 255 visible ASCII, else 400 JSON, storing nothing",
    [keyArbitrary],
    ([key]) =>
      Effect.gen(function*() {
        const userId = freshUserId()
        const answer = yield* postWithKey(key, userId)
        const body = expectSaneAnswer(answer, [201, 400, 422])
        const earlier = usedKeys.get(key)
        if (!isValidKey(key)) {
          expect(answer.status, `accepted the key ${JSON.stringify(key)}`).toBe(400)
          expect(body._tag).toBe("HttpApiDecodeError")
          expect(body.message).toMatch(/^idempotency-key: /)
          expect(yield* ordersOf(userId)).toEqual([])
          return
        }
        if (earlier !== undefined) {
          // The same key with another request (another userId): 422, and nothing stored.
          expect(answer.status).toBe(422)
          expect(body).toMatchObject({ _tag: "IdempotencyKeyReused", key })
          expect(yield* ordersOf(userId)).toEqual([])
          return
        }
        expect(answer.status, `refused the key ${JSON.stringify(key)}: ${answer.text}`).toBe(201)
        expect(answer.headers["idempotent-replayed"]).toBeUndefined()
        usedKeys.set(key, { userId, orderId: body.order.orderId })

        const replay = yield* postWithKey(key, userId)
        expect(replay.status).toBe(201)
        expect(replay.headers["idempotent-replayed"]).toBe("true")
        expect(JSON.parse(replay.text).order).toEqual(body.order)
        const stored = yield* ordersOf(userId)
        expect(stored.map((order) => order.orderId)).toEqual([body.order.orderId])
      }),
    { fastCheck: { numRuns: 200 } }
  )

  it.effect.prop(
    "any other header, of any value (content-type, content-length, traceparent, b3, host, accept...): 201 or 4xx JSON, never 500",
    [
      fc.dictionary(
        fc.constantFrom(
          "content-type", "content-length", "traceparent", "tracestate", "b3", "x-b3-traceid", "x-b3-spanid",
          "x-b3-sampled", "host", "accept", "accept-encoding", "cookie", "x-forwarded-for", "authorization", "expect",
          "transfer-encoding", "connection", "origin", "x-request-id"
        ),
        hostileString({ maxLength: 80 }),
        { maxKeys: 5 }
      ),
      fc.constantFrom("POST /orders", "GET /orders?userId=7", "GET /orders/0190a2b4-8c1d-7e2f-9a3b-4c5d6e7f8091", "GET /health/ready")
    ],
    ([headers, route]) =>
      Effect.gen(function*() {
        const [method, url] = route.split(" ") as ["GET" | "POST", string]
        const { send } = yield* InProcess
        const answer = yield* send({
          method,
          url,
          headers: { "content-type": "application/json", ...headers },
          ...(method === "POST" ? { body: JSON.stringify({ userId: 7 }) } : {})
        })
        expectSaneAnswer(answer, [200, 201, 400, 404, 413, 415])
        // 415 on any route exactly for a multipart body (Node trims the whitespace around a header value).
        // A declared length over 64 KiB is a 413 before anything else.
        const contentType = headers["content-type"] ?? "application/json"
        const tooLarge = Number(headers["content-length"] ?? 0) > 64 * 1024
        expect(answer.status === 415, `${answer.status} for content-type ${JSON.stringify(contentType)}`).toBe(
          /^\s*multipart\//i.test(contentType) && !tooLarge
        )
      }),
    { fastCheck: { numRuns: 150 } }
  )

  it.effect.prop(
    "GET /orders/{any string}: 200, 400 or 404 JSON, never 500",
    [
      fc.oneof(
        hostileString({ maxLength: 60 }),
        hostileString({ maxLength: 60 }).map((s) => {
          try {
            return encodeURIComponent(s)
          } catch {
            return s // a lone surrogate: sent as it is
          }
        }),
        fc.uuid().map((id) => id.toUpperCase()),
        fc.uuid(),
        fc.constant(uuidv7()).map((id) => `${id}%00`),
        fc.string({ unit: fc.constantFrom("%", "2", "5", "e", "0", "F", "z"), maxLength: 20 }),
        fc.nat({ max: 3000 }).map((n) => "a".repeat(n))
      )
    ],
    ([id]) =>
      Effect.gen(function*() {
        const answer = yield* getInProcess(`/orders/${id}`)
        const body = expectSaneAnswer(answer, [200, 400, 404], id)
        if (answer.status === 200) {
          // Only an order that exists, by its id in any case.
          expect(body.orderId.toLowerCase()).toBe(id.toLowerCase())
        }
      }),
    { fastCheck: { numRuns: 200 } }
  )

  it.effect("GET /orders/{id} of an order, in either case, answers it", () =>
    Effect.gen(function*() {
      const created = JSON.parse((yield* postWithKey("case-check", 8)).text).order
      for (const id of [created.orderId, created.orderId.toUpperCase()]) {
        const answer = yield* getInProcess(`/orders/${id}`)
        expect(answer.status).toBe(200)
        expect(JSON.parse(answer.text)).toEqual(created)
      }
    }))

  /** A query value: hostile, percent-encoded or not, or one the API gave. */
  const queryValue = fc.oneof(
    hostileString({ maxLength: 40 }),
    hostileString({ maxLength: 40 }).map((s) => {
      try {
        return encodeURIComponent(s)
      } catch {
        return s
      }
    }),
    fc.integer({ min: -5, max: 200 }).map(String),
    fc.constantFrom("1e2", "0x10", " 7", "7 ", "+7", "7.0", "Infinity", "NaN", "", "%", "%%%", "9007199254740993", "1".repeat(400)),
    fc.uuid().map((id) => Buffer.from(id).toString("base64url")),
    fc.constant(null)
  )

  it.effect.prop(
    "GET /orders?userId=&limit=&cursor= with any values (repeated, encoded or not, very long): 200 or 400 JSON, never 500",
    [
      fc.array(
        fc.tuple(fc.constantFrom("userId", "limit", "cursor", "userid", "other", "userId[]", ""), queryValue),
        { maxLength: 6 }
      )
    ],
    ([pairs]) =>
      Effect.gen(function*() {
        const query = pairs.map(([name, value]) => (value === null ? name : `${name}=${value}`)).join("&")
        const answer = yield* getInProcess(`/orders?${query}`)
        const body = expectSaneAnswer(answer, [200, 400], query)
        if (answer.status === 200) {
          expect(Array.isArray(body.orders)).toBe(true)
          expect(body.next === null || typeof body.next === "string").toBe(true)
        }
      }),
    { fastCheck: { numRuns: 200 } }
  )

  it.effect.prop(
    "GET /orders with parameters from the API's own schemas: always 200, newest first, and every `next` continues the list",
    [
      Arbitrary.make(UserId).map((userId) => (userId % 3) + 1),
      fc.option(fc.integer({ min: 1, max: 100 })),
      fc.option(Arbitrary.make(OrderId).map((orderId) => Schema.encodeSync(Cursor)(orderId)))
    ],
    ([userId, limit, cursor]) =>
      Effect.gen(function*() {
        // A few orders for users 1 to 3, made once.
        if ((yield* ordersOf(1)).length === 0) {
          for (let i = 0; i < 12; i++) yield* postWithKey(`seed-${i}`, (i % 3) + 1)
        }
        const query = [`userId=${userId}`, ...(limit === null ? [] : [`limit=${limit}`]), ...(cursor === null ? [] : [`cursor=${cursor}`])]
        const answer = yield* getInProcess(`/orders?${query.join("&")}`)
        const body = expectSaneAnswer(answer, [200])
        const ids: Array<string> = body.orders.map((order: Json) => order.orderId)
        expect([...ids].sort().reverse()).toEqual(ids)
        expect(body.orders.every((order: Json) => order.userId === userId)).toBe(true)
        if (body.next !== null) {
          const next = yield* getInProcess(`/orders?userId=${userId}&cursor=${body.next}`)
          expect(next.status).toBe(200)
        }
      }),
    { fastCheck: { numRuns: 100 } }
  )

  it.effect("after all of that, every stored order decodes", () =>
    Effect.map(everyStoredRowDecodes, (count) => expect(count).toBeGreaterThan(0)))
})

// ---------------------------------------------------------------------------------------------
// What the Node server itself lets through, over its socket: keys Node's client can send.

layer(orderRoutes(NodeHttpServer.layerTest))("Idempotency-Key over the Node test server", (it) => {
  /** What Node's client sends and its parser takes: tab, space to tilde, and Latin-1 beyond. */
  const nodeSendableKey = fc.oneof(
    fc.string({
      unit: fc.oneof(
        fc.integer({ min: 0x20, max: 0x7e }).map((c) => String.fromCharCode(c)),
        fc.integer({ min: 0x80, max: 0xff }).map((c) => String.fromCharCode(c)),
        fc.constant("\t")
      ),
      maxLength: 300
    }),
    fc.string({ unit: fc.integer({ min: 0x21, max: 0x7e }).map((c) => String.fromCharCode(c)), minLength: 250, maxLength: 260 })
  )

  const seen = new Set<string>()

  it.effect.prop(
    "a key Node can carry: 201 for 1 to 255 visible ASCII (after the whitespace HTTP trims), else 400 JSON",
    [nodeSendableKey],
    ([key]) =>
      Effect.gen(function*() {
        const userId = freshUserId()
        const answer = yield* HttpClientRequest.post("/orders").pipe(
          HttpClientRequest.setHeader("idempotency-key", key),
          HttpClientRequest.bodyText(JSON.stringify({ userId }), "application/json"),
          HttpClient.execute,
          Effect.flatMap((response) =>
            Effect.map(response.text, (text): Answer => ({ status: response.status, headers: response.headers, text }))
          ),
          Effect.scoped
        )
        const body = expectSaneAnswer(answer, [201, 400, 422])
        // A header value's leading and trailing spaces and tabs are not part of it (RFC 9110 §5.5).
        const received = key.replace(/^[ \t]+|[ \t]+$/g, "")
        // An empty value is no key at all: the order is made without one.
        if (received === "") {
          expect(answer.status).toBeOneOf([201, 400])
          return
        }
        if (!isValidKey(received)) {
          expect(answer.status, `accepted ${JSON.stringify(received)}`).toBe(400)
          expect(body._tag).toBe("HttpApiDecodeError")
          return
        }
        expect(answer.status).toBe(seen.has(received) ? 422 : 201)
        seen.add(received)
      }),
    { fastCheck: { numRuns: 100 } }
  )
})

// ---------------------------------------------------------------------------------------------
// With ORDER_API_TOKEN set: any Authorization header is a 401 JSON, the right one alone gets in.

const TOKEN = "hostile-token-0c6f2a"

layer(orderRoutes(inProcessServer, { ORDER_API_TOKEN: TOKEN }))("Authorization of any value (in-process)", (it) => {
  it.effect.prop(
    "any Authorization value: 401 JSON that echoes neither it nor the token, except the right bearer token",
    [
      fc.oneof(
        hostileString({ maxLength: 80 }),
        hostileString({ maxLength: 80 }).map((s) => `Bearer ${s}`),
        hostileString({ maxLength: 3 }).map((s) => `${s}Bearer ${TOKEN}${s}`),
        fc.constantFrom("Bearer", "Bearer ", "bearer " + TOKEN, "BEARER " + TOKEN, `Bearer  ${TOKEN}`, `Basic ${TOKEN}`)
      ),
      fc.constantFrom("POST /orders", "GET /orders?userId=7", "GET /orders/0190a2b4-8c1d-7e2f-9a3b-4c5d6e7f8091")
    ],
    ([authorization, route]) =>
      Effect.gen(function*() {
        const [method, url] = route.split(" ") as ["GET" | "POST", string]
        const { send } = yield* InProcess
        const answer = yield* send({
          method,
          url,
          headers: { "content-type": "application/json", authorization },
          ...(method === "POST" ? { body: JSON.stringify({ userId: 7 }) } : {})
        })
        const body = expectSaneAnswer(answer, [200, 201, 401, 404])
        if (answer.status !== 401) {
          // In only with the token itself, as a bearer token (the scheme's name in any case).
          expect(/^bearer /i.test(authorization) && authorization.slice(7) === TOKEN, `let in ${JSON.stringify(authorization)}`).toBe(true)
        } else {
          expect(body._tag).toBe("Unauthorized")
          if (authorization.length > 8) expect(answer.text).not.toContain(authorization)
          expect(answer.text).not.toContain(TOKEN)
        }
      }),
    { fastCheck: { numRuns: 150 } }
  )
})
