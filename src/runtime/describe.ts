import { Cause, type ParseResult } from "effect"

/** An error's own message, for a one-line log: no stack trace. */
export const errorMessage = (error: unknown): string => (error instanceof Error ? error.message : String(error))

export const describeCause = (cause: Cause.Cause<unknown>): string => errorMessage(Cause.squash(cause))

/** A schema failure in one line, naming each field at fault ("userId: Expected an integer, actual 1.5"). */
export const describeIssues = (issues: ReadonlyArray<ParseResult.ArrayFormatterIssue>) =>
  issues.map((issue) => (issue.path.length > 0 ? `${issue.path.join(".")}: ${issue.message}` : issue.message)).join("; ")
