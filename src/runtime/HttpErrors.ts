import {
  HttpApiError,
  HttpApp,
  HttpIncomingMessage,
  HttpServerError,
  HttpServerRequest,
  HttpServerResponse
} from "@effect/platform"
import { Cause, Effect, Option, type ParseResult } from "effect"
import { describeIssues } from "./describe"

export const MAX_BODY_BYTES = 64 * 1024

/** Seconds a client should wait before retrying a 503. */
export const RETRY_AFTER_SECONDS = "1"

/** An error answer: its status and its JSON body, `{"_tag", "message"}` plus any extra fields. */
export interface ErrorAnswer {
  readonly status: number
  readonly body: { readonly _tag: string; readonly message: string; readonly [extra: string]: unknown }
}

const errorAnswer = (status: number, _tag: string, message: string): ErrorAnswer => ({ status, body: { _tag, message } })

/**
 * The answers both HTTP paths give (the `HttpApi` app and the `POST /orders` fast path), built in
 * one place so that the two cannot drift apart.
 */
export const payloadTooLarge = errorAnswer(413, "PayloadTooLarge", `The request body is over ${MAX_BODY_BYTES} bytes`)
export const malformedRequest = errorAnswer(400, "MalformedRequest", "The request body is not valid JSON")
export const internalServerError = errorAnswer(500, "InternalServerError", "Internal server error")

/** 400 for a body that does not match the schema: the one-line message, and the issues themselves. */
export const decodeFailure = (issues: ReadonlyArray<ParseResult.ArrayFormatterIssue>): ErrorAnswer => ({
  status: 400,
  body: { _tag: "HttpApiDecodeError", message: describeIssues(issues), issues }
})

const respond = (answer: ErrorAnswer) => HttpServerResponse.unsafeJson(answer.body, { status: answer.status })

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
      return respond(payloadTooLarge)
    }
    return yield* app.pipe(HttpIncomingMessage.withMaxBodySize(Option.some(MAX_BODY_BYTES)))
  }).pipe(
    Effect.catchAllCause((cause: Cause.Cause<unknown>) => {
      if (Cause.isInterruptedOnly(cause)) return Effect.failCause(cause as Cause.Cause<never>)
      const error = Cause.squash(cause)
      if (error instanceof HttpApiError.HttpApiDecodeError) {
        return Effect.succeed(respond(decodeFailure(error.issues)))
      }
      if (HttpServerError.isServerError(error) && error._tag === "RouteNotFound") {
        return Effect.succeed(respond(errorAnswer(404, "NotFound", `No route for ${error.request.method} ${error.request.url}`)))
      }
      if (HttpServerError.isServerError(error) && error._tag === "RequestError") {
        return Effect.succeed(respond(malformedRequest))
      }
      // A declared API error: the API's encoder, outside this middleware, answers it with its status.
      if (Option.isSome(Cause.failureOption(cause))) {
        return Effect.failCause(cause as Cause.Cause<never>)
      }
      return Effect.logError("Unexpected failure answering a request", cause).pipe(
        Effect.as(respond(internalServerError))
      )
    })
  )
