import { Cause, type ParseResult } from "effect"

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
