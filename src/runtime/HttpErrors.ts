import {
  HttpApiError,
  HttpApp,
  HttpIncomingMessage,
  HttpServerError,
  HttpServerRequest,
  HttpServerResponse
} from "@effect/platform"
import { Cause, Effect, Option } from "effect"

export const MAX_BODY_BYTES = 64 * 1024

/** Seconds a client should wait before retrying a 503. */
const RETRY_AFTER_SECONDS = "1"

const errorBody = (status: number, _tag: string, message: string) =>
  HttpServerResponse.unsafeJson({ _tag, message }, { status })

const addRetryAfterTo503 = (_: HttpServerRequest.HttpServerRequest, response: HttpServerResponse.HttpServerResponse) =>
  Effect.succeed(response.status === 503 ? HttpServerResponse.setHeader(response, "retry-after", RETRY_AFTER_SECONDS) : response)

const describeIssues = (error: HttpApiError.HttpApiDecodeError) =>
  error.issues.map((issue) => (issue.path.length > 0 ? `${issue.path.join(".")}: ${issue.message}` : issue.message)).join("; ")

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
      return errorBody(413, "PayloadTooLarge", `The request body is over ${MAX_BODY_BYTES} bytes`)
    }
    return yield* app.pipe(HttpIncomingMessage.withMaxBodySize(Option.some(MAX_BODY_BYTES)))
  }).pipe(
    Effect.catchAllCause((cause: Cause.Cause<unknown>) => {
      if (Cause.isInterruptedOnly(cause)) return Effect.failCause(cause as Cause.Cause<never>)
      const error = Cause.squash(cause)
      if (error instanceof HttpApiError.HttpApiDecodeError) {
        return Effect.succeed(
          HttpServerResponse.unsafeJson({ _tag: error._tag, message: describeIssues(error), issues: error.issues }, {
            status: 400
          })
        )
      }
      if (HttpServerError.isServerError(error) && error._tag === "RouteNotFound") {
        return Effect.succeed(errorBody(404, "NotFound", `No route for ${error.request.method} ${error.request.url}`))
      }
      if (HttpServerError.isServerError(error) && error._tag === "RequestError") {
        return Effect.succeed(errorBody(400, "MalformedRequest", "The request body is not valid JSON"))
      }
      // A declared API error: the API's encoder, outside this middleware, answers it with its status.
      if (Option.isSome(Cause.failureOption(cause))) {
        return Effect.failCause(cause as Cause.Cause<never>)
      }
      return Effect.logError("Unexpected failure answering a request", cause).pipe(
        Effect.as(errorBody(500, "InternalServerError", "Internal server error"))
      )
    })
  )
