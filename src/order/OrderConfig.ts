import { Config, Duration } from "effect"
import * as Env from "../config/Env"

export const OrderConfig = Config.all({
  port: Env.port("PORT", 3000),
  publishTimeout: Env.integer("PUBLISH_TIMEOUT_MS", 5000, { min: 1, max: 600_000 }).pipe(Config.map(Duration.millis))
})
