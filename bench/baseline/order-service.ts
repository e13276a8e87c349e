/**
 * The original design's order service, as the benchmark's baseline: Express, one shared amqplib
 * channel, `sendToQueue` persistent and without confirms, `Date.now()` ids, no validation.
 * Written to be as fast as that design allows, so that beating it means something.
 */
import * as amqp from "amqplib"
import express from "express"

const AMQP_URL = process.env.AMQP_URL ?? "amqp://guest:guest@localhost:5672"
const PORT = Number(process.env.PORT ?? 3000)
const QUEUE = process.env.COMMAND_QUEUE ?? "send_notification_command"

const connection = await amqp.connect(AMQP_URL)
const channel = await connection.createChannel()
// The original declared a classic durable queue; the benchmark uses a quorum queue on both sides
// so that the broker does the same work for each.
await channel.assertQueue(QUEUE, { durable: true, arguments: { "x-queue-type": "quorum" } })

const app = express()
app.use(express.json())

app.post("/orders", (req, res) => {
  const { userId } = req.body
  const order = { orderId: Date.now(), userId }
  // Fire and forget: no confirm, so the answer says nothing about the broker having the command.
  channel.sendToQueue(QUEUE, Buffer.from(JSON.stringify(order)), { persistent: true })
  res.status(201).json({ message: "Order created", order })
})

const server = app.listen(PORT, () => console.log(`Order Service running on port ${PORT}`))

const stop = () => {
  server.close()
  connection.close().finally(() => process.exit(0))
}
process.on("SIGTERM", stop)
process.on("SIGINT", stop)
