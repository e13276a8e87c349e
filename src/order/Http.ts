import {
  HttpApiBuilder,
  HttpApiError,
  HttpApp,
  HttpIncomingMessage,
  HttpServer,
  HttpServerError,
  HttpServerRequest,
  HttpServerResponse
} from "@effect/platform"
import { NodeHttpServer } from "@effect/platform-node"
import { Cause, Effect, Layer, Option } from "effect"
import { createServer } from "node:http"
import { BrokerUnavailable } from "./Errors"
import { OrderApi, OrderCreated } from "./OrderApi"
import { OrderConfig } from "./OrderConfig"
import { Orders } from "./Orders"

export const MAX_BODY_BYTES = 64 * 1024

/** Seconds a client should wait before retrying a 503. */
const RETRY_AFTER_SECONDS = "1"

const OrdersHandlers = HttpApiBuilder.group(OrderApi, "orders", (handlers) =>
  Effect.gen(function*() {
    const orders = yield* Orders
    return handlers.handle("createOrder", ({ payload }) =>
      orders.create(payload.userId).pipe(Effect.map((order) => new OrderCreated({ message: "Order created", order }))))
  }))

const errorBody = (status: number, _tag: string, message: string) =>
  HttpServerResponse.unsafeJson({ _tag, message }, { status })

/**
 * Every error answer gets a JSON body `{"_tag", "message"}`. The framework answers some failures
 * with empty bodies (malformed JSON, unknown routes, defects) or, for an oversized body, by
 * dropping the connection, and its schema errors carry a multi-line message; this middleware
 * answers all of them itself, and adds `Retry-After` to a 503.
 */
const answerEveryErrorWithJson = (app: HttpApp.Default<unknown>): HttpApp.Default =>
  Effect.gen(function*() {
    const request = yield* HttpServerRequest.HttpServerRequest
    if (Number(request.headers["content-length"] ?? 0) > MAX_BODY_BYTES) {
      return errorBody(413, "PayloadTooLarge", `The request body is over ${MAX_BODY_BYTES} bytes`)
    }
    return yield* app.pipe(HttpIncomingMessage.withMaxBodySize(Option.some(MAX_BODY_BYTES)))
  }).pipe(
    Effect.catchAllCause((cause) => {
      if (Cause.isInterruptedOnly(cause)) return Effect.failCause(cause as Cause.Cause<never>)
      const error = Cause.squash(cause)
      if (error instanceof BrokerUnavailable) {
        return Effect.succeed(
          HttpServerResponse.setHeader(errorBody(503, error._tag, error.message), "retry-after", RETRY_AFTER_SECONDS)
        )
      }
      if (error instanceof HttpApiError.HttpApiDecodeError) {
        const message = error.issues.map((issue) =>
          issue.path.length > 0 ? `${issue.path.join(".")}: ${issue.message}` : issue.message
        ).join("; ")
        return Effect.succeed(HttpServerResponse.unsafeJson({ _tag: error._tag, message, issues: error.issues }, { status: 400 }))
      }
      if (HttpServerError.isServerError(error) && error._tag === "RouteNotFound") {
        return Effect.succeed(errorBody(404, "NotFound", `No route for ${error.request.method} ${error.request.url}`))
      }
      if (HttpServerError.isServerError(error) && error._tag === "RequestError") {
        return Effect.succeed(errorBody(400, "MalformedRequest", "The request body is not valid JSON"))
      }
      return Effect.logError("Unexpected failure answering a request", cause).pipe(
        Effect.as(errorBody(500, "InternalServerError", "Internal server error"))
      )
    })
  )

const ApiLive = HttpApiBuilder.api(OrderApi).pipe(Layer.provide(OrdersHandlers))

const ServerLive = Layer.unwrapEffect(
  Effect.map(OrderConfig, ({ port }) => NodeHttpServer.layer(createServer, { port }))
)

/** The order API on `PORT`. Closing its scope stops accepting and lets in-flight requests finish. */
export const HttpLive = HttpApiBuilder.serve().pipe(
  Layer.provide(HttpApiBuilder.middleware(answerEveryErrorWithJson)),
  Layer.provide(ApiLive),
  HttpServer.withLogAddress,
  Layer.provide(ServerLive)
)
