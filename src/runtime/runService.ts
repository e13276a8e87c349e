import { HttpServerError } from "@effect/platform"
import * as NodeRuntime from "@effect/platform-node/NodeRuntime"
import { Cause, ConfigError, Effect, Layer, Option } from "effect"
import { describeConfigError } from "../config/Env"
import { errorMessage } from "./describe"
import { LogConfig, LoggingLive } from "./Logging"

/** What stopped a service, in one line where the user can act on it (a bad value, a busy port). */
const reportFailure = (cause: Cause.Cause<unknown>) => {
  if (Cause.isInterruptedOnly(cause)) return Effect.void
  const failure = Cause.failureOption(cause)
  if (Option.isSome(failure) && ConfigError.isConfigError(failure.value)) {
    return Effect.logError(describeConfigError(failure.value))
  }
  if (Option.isSome(failure) && HttpServerError.isServerError(failure.value) && failure.value._tag === "ServeError") {
    return Effect.logError(`Cannot serve HTTP: ${errorMessage(failure.value.cause)} (check PORT or NOTIFICATION_HEALTH_PORT)`)
  }
  // A typed failure that says itself what is wrong (the SQLite store held by another process).
  if (Option.isSome(failure) && failure.value instanceof Error && "_tag" in failure.value) {
    return Effect.logError(failure.value.message)
  }
  return Effect.logError("Service stopped", cause)
}

/**
 * Runs services until SIGTERM or SIGINT, which close its scope: graceful shutdown, exit 0.
 * A configuration error is one line and exit 1. A second signal exits at once (Node's default,
 * once runMain has removed its handlers after the first).
 */
export const runService = <E>(...services: ReadonlyArray<Layer.Layer<never, E>>) =>
  LogConfig.pipe(
    // Each service is built on its own (`Layer.launch` memoises per build), so two HttpApi servers
    // in one process do not share a router.
    Effect.zipRight(Effect.all(services.map(Layer.launch), { concurrency: "unbounded", discard: true })),
    Effect.tapErrorCause(reportFailure),
    Effect.onInterrupt(() => Effect.logInfo("Stopped")),
    Effect.provide(LoggingLive),
    NodeRuntime.runMain({ disableErrorReporting: true, disablePrettyLogger: true })
  )
