import { Cause } from "effect"

/** An error's own message, for a one-line log: no stack trace. */
export const errorMessage = (error: unknown): string => (error instanceof Error ? error.message : String(error))

export const describeCause = (cause: Cause.Cause<unknown>): string => errorMessage(Cause.squash(cause))
