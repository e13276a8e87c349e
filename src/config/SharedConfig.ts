import { Config, Duration, Redacted } from "effect"
import * as Env from "./Env"

const isAmqpUrl = (entry: string) => {
  try {
    const url = new URL(entry)
    return (url.protocol === "amqp:" || url.protocol === "amqps:") && url.hostname !== ""
  } catch {
    return false
  }
}

// RabbitMQ queue names are at most 255 bytes, and the dead-letter queue appends ".dlq".
const isQueueName = (name: string) => Buffer.byteLength(name) <= 251 && !name.startsWith("amq.")

/** What both services read: where the broker is, which queue carries the commands, logging, shutdown. */
export const SharedConfig = Config.all({
  amqpUrls: Env.redactedList(
    "AMQP_URL",
    "amqp://guest:guest@localhost:5672",
    "a comma-separated list of amqp:// or amqps:// URLs",
    isAmqpUrl
  ),
  commandQueue: Env.validString(
    "COMMAND_QUEUE",
    "send_notification_command",
    "a queue name of at most 251 bytes not starting with \"amq.\"",
    isQueueName
  ),
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
