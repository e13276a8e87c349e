import { Config, Duration, Redacted } from "effect"
import { AmqpTlsConfig } from "./AmqpTls"
import * as Env from "./Env"

const isAmqpUrl = (entry: string) => {
  try {
    const url = new URL(entry)
    return (url.protocol === "amqp:" || url.protocol === "amqps:") && url.hostname !== ""
  } catch {
    return false
  }
}


/** What both services read: where the broker is, which queue carries the commands, confirms, shutdown. */
export const SharedConfig = Config.all({
  amqpUrls: Env.secretList(
    "AMQP_URL",
    "amqp://guest:guest@localhost:5672",
    "a comma-separated list of amqp:// or amqps:// URLs",
    isAmqpUrl
  ),
  amqpTls: AmqpTlsConfig,
  commandQueue: Env.queueName("COMMAND_QUEUE", "send_notification_command"),
  // 0 turns heartbeats off; RabbitMQ takes the lower of its own setting and ours.
  heartbeatSeconds: Env.integer("AMQP_HEARTBEAT_S", 10, { min: 0, max: 3600 }),
  publishTimeout: Env.integer("PUBLISH_TIMEOUT_MS", 5000, { min: 1, max: 600_000 }).pipe(Config.map(Duration.millis)),
  shutdownTimeout: Env.integer("SHUTDOWN_TIMEOUT_MS", 10_000, { min: 0, max: 3_600_000 }).pipe(
    Config.map(Duration.millis)
  )
})

/** A broker URL fit for a log line: `amqp://guest:***@host:5672/vhost`. */
export const redactUrl = (url: Redacted.Redacted<string>): string => {
  const parsed = new URL(Redacted.value(url))
  if (parsed.password !== "") parsed.password = "***"
  return parsed.toString().replace(/\/$/, "")
}
