import * as amqp from "amqplib"

/**
 * Vitest global setup: the integration tests need the real broker at AMQP_URL. If nothing answers,
 * the run fails at once with one line saying how to start one (never a skip, with or without CI).
 */
export default async function requireBroker() {
  const url = (process.env.AMQP_URL ?? "amqp://guest:guest@localhost:5672").split(",")[0]!.trim()
  try {
    const connection = await amqp.connect(url, { timeout: 5000 })
    await connection.close()
  } catch (error) {
    const where = url.replace(/\/\/([^:/@]+):[^@]*@/, "//$1:***@")
    throw new Error(
      `No RabbitMQ at ${where} (${(error as Error).message}). Start one with ` +
        "`rabbitmq-server -detached` or `docker compose up -d rabbitmq`, or point AMQP_URL at one."
    )
  }
}
