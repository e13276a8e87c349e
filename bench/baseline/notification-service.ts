/**
 * The original design's consumer, as the benchmark's baseline: JSON.parse, the log line, the
 * simulated send, ack. Prefetch and delay come from the same variables as the project's.
 */
import * as amqp from "amqplib"

const AMQP_URL = process.env.AMQP_URL ?? "amqp://guest:guest@localhost:5672"
const QUEUE = process.env.COMMAND_QUEUE ?? "send_notification_command"
const PREFETCH = Number(process.env.NOTIFICATION_PREFETCH ?? 1)
const DELAY_MS = Number(process.env.NOTIFICATION_SEND_DELAY_MS ?? 500)

const connection = await amqp.connect(AMQP_URL)
const channel = await connection.createChannel()
await channel.assertQueue(QUEUE, { durable: true, arguments: { "x-queue-type": "quorum" } })
await channel.prefetch(PREFETCH)

await channel.consume(QUEUE, (message) => {
  if (message === null) return
  try {
    const command = JSON.parse(message.content.toString())
    console.log(`[Notification Service] Sending notification for order ${command.orderId}`)
    // The original always waited; with no delay the baseline acks at once, its fastest.
    if (DELAY_MS > 0) setTimeout(() => channel.ack(message), DELAY_MS)
    else channel.ack(message)
  } catch {
    channel.nack(message, false, true)
  }
})
console.log("[Notification Service] Waiting for commands...")

const stop = () => connection.close().finally(() => process.exit(0))
process.on("SIGTERM", stop)
process.on("SIGINT", stop)
