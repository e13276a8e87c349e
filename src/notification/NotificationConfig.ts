import { Config, Duration } from "effect"
import * as Env from "../config/Env"

export const NotificationConfig = Config.all({
  prefetch: Env.integer("NOTIFICATION_PREFETCH", 1, { min: 1, max: 65535 }),
  sendDelay: Env.integer("NOTIFICATION_SEND_DELAY_MS", 500, { min: 0, max: 3_600_000 }).pipe(Config.map(Duration.millis)),
  failureRate: Env.probability("NOTIFICATION_FAILURE_RATE", 0),
  // At most 20: RabbitMQ 4's quorum queues dead-letter by themselves after 20 deliveries by default,
  // so a larger value would not be honoured there.
  maxAttempts: Env.integer("NOTIFICATION_MAX_ATTEMPTS", 5, { min: 1, max: 20 }),
  healthPort: Env.port("NOTIFICATION_HEALTH_PORT", 3001)
})
