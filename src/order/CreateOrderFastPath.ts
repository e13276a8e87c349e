import { HttpServerError } from "@effect/platform"
import { Cause, Effect, Either, Exit, Option, ParseResult, Runtime, Schema } from "effect"
import type { IncomingMessage, ServerResponse } from "node:http"
import type { Order } from "../domain/Order"
import { tracingEnabled } from "../observability/TraceContext"
import type { FastRoute } from "../runtime/GracefulHttpServer"
import {
  decodeFailure,
  type ErrorAnswer,
  internalServerError,
  malformedRequest,
  MAX_BODY_BYTES,
  payloadTooLarge,
  RETRY_AFTER_SECONDS
} from "../runtime/HttpErrors"
import type { BrokerUnavailable } from "./Errors"
import { CreateOrderRequest, type OrderCreated } from "./OrderApi"
import { Orders } from "./Orders"

/**
 * `POST /orders` served by a plain Node handler, ahead of the `HttpApi` app that serves the rest.
 *
 * Why: it is the route that takes the load, and profiles under the benchmark put about 60% of the
 * order service's busy time in the generic `HttpApi` pipeline around it (routing, the payload
 * decoded and the answer encoded as Effects, the middlewares, a fiber whose `FiberRef`s are
 * copied), for about 275 µs of CPU per request against Express's 110. Here the only Effect work
 * per request is `Orders.create` itself, in one fiber.
 *
 * What stays the same: the `CreateOrderRequest` schema, `Orders.create` (so the order id, the
 * confirmed publish and its metrics), every answer and its JSON body (`HttpErrors` builds them
 * for both paths), and the drain at shutdown (`serveGracefully` counts these requests too). The
 * contract tests run against both paths.
 *
 * What it leaves out is tracing: there is no request span and no incoming `traceparent`. So it is
 * used only while tracing is off (no OTLP endpoint, the usual case in production here); with
 * tracing on, `POST /orders` goes through the `HttpApi` route and its traced pipeline.
 */
export const CreateOrderFastPath: Effect.Effect<Option.Option<FastRoute>, never, Orders> = Effect.gen(function*() {
  if (yield* tracingEnabled) return Option.none()
  const orders = yield* Orders
  // Every request's fiber starts from the service's runtime: its logger, its FiberRefs.
  const runtime = yield* Effect.runtime<never>()
  const runFork = Runtime.runFork(runtime)

  // `runFork` and an observer, as the platform's own handler does: `Runtime.runCallback` is the
  // same fork and observer underneath, and its cancel forks a second fiber to interrupt the first.
  const create = (userId: CreateOrderRequest["userId"], response: ServerResponse) => {
    const fiber = runFork(orders.create(userId))
    fiber.addObserver((exit) => answerCreated(exit, response))
    // As the platform does: a client that goes away before its answer interrupts the publish.
    response.once("close", () => {
      if (!response.writableEnded) fiber.unsafeInterruptAsFork(HttpServerError.clientAbortFiberId)
    })
  }

  const answerCreated = (exit: Exit.Exit<Order, BrokerUnavailable>, response: ServerResponse) => {
    if (Exit.isSuccess(exit)) {
      const { orderId, userId } = exit.value
      const body: typeof OrderCreated.Encoded = { message: "Order created", order: { orderId, userId } }
      return send(response, 201, body)
    }
    // Interrupted: the client went away; there is no one to answer.
    if (Cause.isInterruptedOnly(exit.cause)) return
    const failure = Cause.failureOption(exit.cause)
    if (Option.isSome(failure)) {
      const { _tag, message } = failure.value
      return send(response, 503, { _tag, message }, { "retry-after": RETRY_AFTER_SECONDS })
    }
    runFork(Effect.logError("Unexpected failure answering a request", exit.cause))
    sendError(response, internalServerError)
  }

  const handle = (request: IncomingMessage, response: ServerResponse) =>
    readBody(request, response, (text) => {
      let json: unknown
      try {
        // An empty body is `null`, as for the platform's `request.json`: a schema error, not a JSON one.
        json = text === "" ? null : JSON.parse(text)
      } catch {
        return sendError(response, malformedRequest)
      }
      const decoded = decodeCreateOrderRequest(json)
      if (Either.isLeft(decoded)) return sendError(response, decodeFailure(ParseResult.ArrayFormatter.formatErrorSync(decoded.left)))
      create(decoded.right.userId, response)
    })

  return Option.some({ matches, handle })
})

type CreateOrderRequest = typeof CreateOrderRequest.Type

// Compiled once; the same schema, and the same (default) parse options, as the HttpApi endpoint's.
const decodeCreateOrderRequest = Schema.decodeUnknownEither(CreateOrderRequest)

/**
 * `POST /orders` with a JSON body, or none declared: the platform reads a body without a
 * content type as JSON too. Other content types and paths (`/orders?x`, `/orders/`) go to the
 * `HttpApi` app, which answers them as it always has.
 */
const matches = (request: IncomingMessage) => {
  if (request.method !== "POST" || request.url !== "/orders") return false
  const contentType = request.headers["content-type"]
  return contentType === undefined || contentType.toLowerCase().includes("application/json")
}

/**
 * Reads the body, up to MAX_BODY_BYTES. Over that (declared up front, or counted while reading a
 * chunked body), answers 413 at once and closes the connection rather than read the rest.
 */
const readBody = (request: IncomingMessage, response: ServerResponse, onBody: (text: string) => void) => {
  // A client that goes away mid-body: its response's 'close' ends the request's accounting.
  request.on("error", () => response.destroy())
  if (Number(request.headers["content-length"] ?? 0) > MAX_BODY_BYTES) return tooLarge(request, response)
  const chunks: Array<Buffer> = []
  let size = 0
  const onData = (chunk: Buffer) => {
    size += chunk.length
    if (size <= MAX_BODY_BYTES) return void chunks.push(chunk)
    request.off("data", onData)
    request.off("end", onEnd)
    tooLarge(request, response)
  }
  const onEnd = () => onBody((chunks.length === 1 ? chunks[0]! : Buffer.concat(chunks, size)).toString("utf8"))
  request.on("data", onData)
  request.on("end", onEnd)
}

const tooLarge = (request: IncomingMessage, response: ServerResponse) => {
  request.pause()
  sendError(response, payloadTooLarge, { connection: "close" })
}

const sendError = (response: ServerResponse, answer: ErrorAnswer, headers?: Record<string, string>) =>
  send(response, answer.status, answer.body, headers)

const send = (response: ServerResponse, status: number, body: unknown, headers?: Record<string, string>) => {
  const json = JSON.stringify(body)
  response.writeHead(status, { ...headers, "content-type": "application/json", "content-length": Buffer.byteLength(json) })
  response.end(json)
}
