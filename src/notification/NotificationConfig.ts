import { Config, ConfigError, Duration, Either } from "effect"
import * as Env from "../config/Env"
import type { RetryPolicy } from "../messaging/DelayedRetry"

/** The longest retry delay we accept: an hour, and the delay queues' names stay short. */
const LONGEST_DELAY_MILLIS = 3_600_000

const retryPolicy = Config.all({
  // At most 20: RabbitMQ 4's quorum queues dead-letter by themselves after 20 deliveries by default,
  // so a larger value would not be honoured there.
  maxAttempts: Env.integer("NOTIFICATION_MAX_ATTEMPTS", 5, { min: 1, max: 20 }),
  firstDelayMillis: Env.integer("NOTIFICATION_RETRY_DELAY_MS", 1000, { min: 0, max: LONGEST_DELAY_MILLIS }),
  maxDelayMillis: Env.integer("NOTIFICATION_RETRY_MAX_DELAY_MS", 60_000, { min: 1, max: LONGEST_DELAY_MILLIS })
}).pipe(Config.mapOrFail((policy): Either.Either<RetryPolicy, ConfigError.ConfigError> =>
  policy.maxDelayMillis >= policy.firstDelayMillis
    ? Either.right(policy)
    : Either.left(ConfigError.InvalidData(
      ["NOTIFICATION_RETRY_MAX_DELAY_MS"],
      `NOTIFICATION_RETRY_MAX_DELAY_MS must be at least NOTIFICATION_RETRY_DELAY_MS (got ${policy.maxDelayMillis}, below ${policy.firstDelayMillis})`
    ))
))

export const NotificationConfig = Config.all({
  prefetch: Env.integer("NOTIFICATION_PREFETCH", 1, { min: 1, max: 65535 }),
  sendDelay: Env.integer("NOTIFICATION_SEND_DELAY_MS", 500, { min: 0, max: 3_600_000 }).pipe(Config.map(Duration.millis)),
  failureRate: Env.probability("NOTIFICATION_FAILURE_RATE", 0),
  retryPolicy,
  // 0: any free port (the log says which), so several services can run on one host.
  healthPort: Env.integer("NOTIFICATION_HEALTH_PORT", 3001, { min: 0, max: 65535 })
})
