import { Effect, Layer, Schedule } from "effect"
import { OrderStore } from "./store/OrderStore"

/** How long an `Idempotency-Key` is honoured (contract §4: at least 24 hours). */
const IDEMPOTENCY_WINDOW_MS = 24 * 60 * 60 * 1000

/** How often expired keys are removed; a key lives at most this much past its window. */
const SWEEP_INTERVAL = "10 minutes"

/** Removes idempotency keys past their window, at start and then every SWEEP_INTERVAL. */
export const IdempotencyKeyExpiryLive = Layer.scopedDiscard(
  Effect.gen(function*() {
    const store = yield* OrderStore
    const sweep = Effect.suspend(() => store.expireIdempotencyKeys(new Date(Date.now() - IDEMPOTENCY_WINDOW_MS))).pipe(
      Effect.tap((removed) => (removed > 0 ? Effect.logDebug(`Removed ${removed} expired idempotency keys`) : Effect.void)),
      Effect.catchAll((error) => Effect.logWarning(`Could not remove expired idempotency keys: ${error.message}`))
    )
    yield* Effect.forkScoped(Effect.repeat(sweep, Schedule.spaced(SWEEP_INTERVAL)))
  })
)
