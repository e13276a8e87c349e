import { HttpServerError } from "@effect/platform"
import * as NodeRuntime from "@effect/platform-node/NodeRuntime"
import { Cause, ConfigError, Effect, Layer, Option } from "effect"
import { setFlagsFromString } from "node:v8"
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
  return Effect.logError("Service stopped", cause)
}

/**
 * How far V8 lets the heap grow past what its last full collection left alive before it collects
 * again: 20%, where V8's default allows up to 300%. Under load nearly everything a request
 * allocates dies young, but what is in flight at each minor collection (~1.5 MB at 50 concurrent
 * requests) is promoted, and by default that garbage piles up to several times the live heap.
 * Measured under `npm run bench` (bundled): the order service's peak RSS went from about 215 MB to
 * 145 MB, for about 10% more CPU per request. A flag V8 reads at each collection, so setting it
 * here, before any load, works under tsx and in the bundle alike.
 */
const HEAP_GROWING_PERCENT = 20

/**
 * Runs services until SIGTERM or SIGINT, which close its scope: graceful shutdown, exit 0.
 * A configuration error is one line and exit 1. A second signal exits at once (Node's default,
 * once runMain has removed its handlers after the first).
 */
export const runService = <E>(...services: ReadonlyArray<Layer.Layer<never, E>>) => {
  setFlagsFromString(`--heap-growing-percent=${HEAP_GROWING_PERCENT}`)
  return LogConfig.pipe(
    // Each service is built on its own (`Layer.launch` memoises per build), so two HttpApi servers
    // in one process do not share a router.
    Effect.zipRight(Effect.all(services.map(Layer.launch), { concurrency: "unbounded", discard: true })),
    Effect.tapErrorCause(reportFailure),
    Effect.onInterrupt(() => Effect.logInfo("Stopped")),
    Effect.provide(LoggingLive),
    NodeRuntime.runMain({ disableErrorReporting: true, disablePrettyLogger: true })
  )
}
