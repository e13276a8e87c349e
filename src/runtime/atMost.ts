import { type Duration, Effect } from "effect"

/**
 * Runs `effect` for at most `duration`, ignoring its outcome, also inside a finalizer. Finalizers
 * are uninterruptible, so a plain `Effect.timeout` there would, after timing out, still wait for
 * the slow effect to finish: SHUTDOWN_TIMEOUT_MS would bound nothing.
 */
export const atMost = (duration: Duration.DurationInput) => <A, E, R>(effect: Effect.Effect<A, E, R>) =>
  effect.pipe(Effect.interruptible, Effect.timeout(duration), Effect.ignore)
