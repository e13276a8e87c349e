import { type Duration, Schedule } from "effect"

/**
 * Retrying something that is away (a broker, a store): 100 ms doubling, jittered, never more than
 * `cap` between tries, never giving up. The cap bounds how late a service notices the return.
 */
export const backoff = (cap: Duration.DurationInput) =>
  Schedule.exponential("100 millis").pipe(Schedule.jittered, Schedule.union(Schedule.spaced(cap)))
