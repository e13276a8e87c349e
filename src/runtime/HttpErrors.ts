import {
  HttpApiError,
  HttpApiSchema,
  HttpApp,
  HttpIncomingMessage,
  HttpServerError,
  HttpServerRequest,
  HttpServerResponse
} from "@effect/platform"
import { Cause, Effect, Option, Schema } from "effect"
import { describeIssues } from "./describe"

export const MAX_BODY_BYTES = 64 * 1024

/** Seconds a client should wait before retrying a 503. */
export const RETRY_AFTER_SECONDS = "1"

/**
 * The error answers every HTTP API of ours can give, whatever the route: each is one class, whose
 * wire shape `{"_tag", "message"}` and status are the ones the API documents and the one this
 * middleware answers with.
 */
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

const payloadTooLarge = new PayloadTooLarge({ message: `The request body is over ${MAX_BODY_BYTES} bytes` })
const malformedRequest = new MalformedRequest({ message: "The request body is not valid JSON" })
const internalServerError = new InternalServerError({ message: "Internal server error" })
const nestedTooDeeply = new MalformedRequest({ message: "The request body is nested too deeply to decode" })
const multipartRefused = { _tag: "UnsupportedMediaType", message: "The request body must be application/json, not multipart" }

const respond = (status: number, error: { readonly _tag: string; readonly message: string }, extra?: object) =>
  HttpServerResponse.unsafeJson({ _tag: error._tag, message: error.message, ...extra }, { status })

const addRetryAfterTo503 = (_: HttpServerRequest.HttpServerRequest, response: HttpServerResponse.HttpServerResponse) =>
  Effect.succeed(response.status === 503 ? HttpServerResponse.setHeader(response, "retry-after", RETRY_AFTER_SECONDS) : response)

/**
 * An `HttpApi` middleware giving every error answer a JSON body `{"_tag", "message"}`.
 *
 * The framework answers some failures itself with empty bodies (malformed JSON, unknown routes,
 * defects), drops the connection for an oversized body, and words schema errors as a multi-line
 * tree; those are answered here. The API's declared errors pass through to its own encoder, which
 * knows their statuses. Every 503 gets `Retry-After`.
 */
export const answerEveryErrorWithJson = (app: HttpApp.Default): HttpApp.Default =>
  Effect.gen(function*() {
    yield* HttpApp.appendPreResponseHandler(addRetryAfterTo503)
    const request = yield* HttpServerRequest.HttpServerRequest
    if (Number(request.headers["content-length"] ?? 0) > MAX_BODY_BYTES) {
      return respond(413, payloadTooLarge)
    }
    // No route takes multipart, and the platform would try to parse it anyway (and die, or wait on a cut-short body).
    if (/^\s*multipart\//i.test(request.headers["content-type"] ?? "")) {
      return respond(415, multipartRefused)
    }
    return yield* app.pipe(HttpIncomingMessage.withMaxBodySize(Option.some(MAX_BODY_BYTES)))
  }).pipe(
    Effect.catchAllCause((cause: Cause.Cause<unknown>) => {
      if (Cause.isInterruptedOnly(cause)) return Effect.failCause(cause as Cause.Cause<never>)
      const error = Cause.squash(cause)
      if (error instanceof HttpApiError.HttpApiDecodeError) {
        // The one-line message, and the issues themselves for a client that wants them.
        const message = describeIssues(error.issues)
        return Effect.succeed(respond(400, { _tag: "HttpApiDecodeError", message }, { issues: error.issues }))
      }
      if (HttpServerError.isServerError(error) && error._tag === "RouteNotFound") {
        const notFound = new NotFound({ message: `No route for ${error.request.method} ${error.request.url}` })
        return Effect.succeed(respond(404, notFound))
      }
      if (HttpServerError.isServerError(error) && error._tag === "RequestError") {
        return Effect.succeed(respond(400, malformedRequest))
      }
      // Describing a value nested thousands deep overflows the stack in Effect's issue formatter.
      if (error instanceof RangeError && Option.isNone(Cause.failureOption(cause))) {
        return Effect.succeed(respond(400, nestedTooDeeply))
      }
      // A declared API error: the API's encoder, outside this middleware, answers it with its status.
      if (Option.isSome(Cause.failureOption(cause))) {
        return Effect.failCause(cause as Cause.Cause<never>)
      }
      return Effect.logError("Unexpected failure answering a request", cause).pipe(
        Effect.as(respond(500, internalServerError))
      )
    })
  )
