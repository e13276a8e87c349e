import { Config } from "effect"
import * as Env from "../config/Env"

export const OrderConfig = Config.all({
  port: Env.port("PORT", 3000),
  eventsQueue: Env.queueName("ORDER_EVENTS_QUEUE", "order_service.notification_events"),
  outboxMaxPending: Env.integer("OUTBOX_MAX_PENDING", 100_000, { min: 1, max: 100_000_000 })
})
