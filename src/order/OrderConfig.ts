import { Config } from "effect"
import * as Env from "../config/Env"

/** `ORDER_API_TOKEN` (or `_FILE`): the bearer token `/orders` requires, if any; `npm run verify` sends it. */
export const ApiTokenConfig = Env.secret(
  "ORDER_API_TOKEN",
  "visible ASCII characters, without spaces",
  // What a client can put after "Authorization: Bearer " in one header.
  (token) => /^[\x21-\x7e]+$/.test(token)
)

export const OrderConfig = Config.all({
  port: Env.port("PORT", 3000),
  eventsQueue: Env.queueName("ORDER_EVENTS_QUEUE", "order_service.notification_events"),
  outboxMaxPending: Env.integer("OUTBOX_MAX_PENDING", 100_000, { min: 1, max: 100_000_000 }),
  apiToken: ApiTokenConfig
})
