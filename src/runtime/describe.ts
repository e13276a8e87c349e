import { Cause, Either, type ParseResult } from "effect"

/**
 * An error's own message, for a one-line log: no stack trace. OpenSSL's errors (a TLS handshake, a
 * PEM file) carry its raw error line ("80FC...:error:0A00045C:SSL routines:...:SSL alert number 116\n");
 * their `reason` is the readable part.
 */
export const errorMessage = (error: unknown): string => {
  if (!(error instanceof Error)) return String(error)
  const { library, reason } = error as { readonly library?: unknown; readonly reason?: unknown }
  return typeof library === "string" && typeof reason === "string" && reason !== "" ? reason : error.message
}

export const describeCause = (cause: Cause.Cause<unknown>): string => errorMessage(Cause.squash(cause))

/** A schema failure in one line, naming each field at fault ("userId: Expected an integer, actual 1.5"). */
export const describeIssues = (issues: ReadonlyArray<ParseResult.ArrayFormatterIssue>) =>
  issues.map((issue) => (issue.path.length > 0 ? `${issue.path.join(".")}: ${issue.message}` : issue.message)).join("; ")

/** The longest reason a rejected message carries: it goes into a log line and a header table of at most 64 KiB. */
const MAX_REASON_CHARS = 1000

/** Half of a UTF-16 pair without its other half: text no store keeps as it is. */
export const LONE_SURROGATE = /[\ud800-\udbff](?![\udc00-\udfff])|(?<![\ud800-\udbff])[\udc00-\udfff]/g

/**
 * Why a message was refused, fit for one log line, one AMQP header and the order store: control
 * characters (which a hostile body can put into a parser's message, to forge log lines) escaped,
 * lone surrogates replaced, and the length bounded.
 */
export const oneLineReason = (reason: string): string => {
  const escaped = reason
    .replace(/[\u0000-\u001f\u007f]/g, (char) => `\\u${char.charCodeAt(0).toString(16).padStart(4, "0")}`)
    .replace(LONE_SURROGATE, "\ufffd")
  return escaped.length <= MAX_REASON_CHARS ? escaped : `${escaped.slice(0, MAX_REASON_CHARS)}... (${escaped.length} characters)`
}

/**
 * `decode`'s result, or its failure reason in one line. A value nested thousands deep makes Effect's
 * issue formatter overflow the stack; that is a refusal too, not a crash of the consumer.
 */
export const decodeOrReason = <A>(decode: () => Either.Either<A, string>): Either.Either<A, string> => {
  try {
    return Either.mapLeft(decode(), oneLineReason)
  } catch (error) {
    // Thrown as it is, or inside the FiberFailure of a schema decoder run synchronously.
    if (/Maximum call stack size exceeded/.test(String(error))) return Either.left("the body is nested too deeply to decode")
    throw error
  }
}
