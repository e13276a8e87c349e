import * as amqp from "amqplib"
import { ConfigProvider, Effect, Layer } from "effect"
import { execFile } from "node:child_process"
import { randomUUID } from "node:crypto"
import { delaysOf, retryQueueOf } from "../../src/messaging/DelayedRetry"

export const AMQP_URL = (process.env.AMQP_URL ?? "amqp://guest:guest@localhost:5672").split(",")[0]!.trim()

/** A queue name no other test, run or service uses. */
export const uniqueQueueName = (label: string) => `test.${label}.${randomUUID().slice(0, 8)}`

/**
 * The delay queues a notification consumer on `queue` declares with the retry settings in `env`
 * (the defaults otherwise), for every attempt count it may be given.
 */
export const retryQueuesOf = (queue: string, env: Record<string, string | number> = {}) =>
  delaysOf({
    maxAttempts: 20,
    firstDelayMillis: Number(env["NOTIFICATION_RETRY_DELAY_MS"] ?? 1000),
    maxDelayMillis: Number(env["NOTIFICATION_RETRY_MAX_DELAY_MS"] ?? 60_000)
  }).map((delay) => retryQueueOf(queue, delay))

/**
 * A plain amqplib connection for the test's own look at the broker (publish, get, purge), closed
 * and with the test's queues deleted when the scope closes; `env`: the retry settings of the
 * consumers the test runs on `queue`, whose delay queues are deleted too.
 */
export const testBroker = (queue: string, env: Record<string, string | number> = {}) =>
  Effect.acquireRelease(
    Effect.promise(async () => {
      const connection = await amqp.connect(AMQP_URL)
      const channel = await connection.createChannel()
      return { connection, channel }
    }),
    ({ connection }) =>
      Effect.promise(async () => {
        // On a channel of its own: the test's may have been closed by the broker (a 404, a 406).
        const channel = await connection.createChannel()
        // The queue, its dead-letter and delay queues, and the events queue of an order service on it
        // (with its own). Deleting a queue that does not exist is no error.
        for (const name of [queue, `${queue}.dlq`, ...retryQueuesOf(queue, env), `${queue}.events`, `${queue}.events.dlq`]) {
          await channel.deleteQueue(name).catch(() => undefined)
        }
        await connection.close().catch(() => undefined)
      })
  )

/** Configuration for a service under test: only what the test sets, the defaults for the rest. */
export const testConfig = (values: Record<string, string | number>) =>
  Layer.setConfigProvider(
    ConfigProvider.fromMap(new Map(Object.entries({ AMQP_URL, ...values }).map(([k, v]) => [k, String(v)])))
  )

/** Polls the broker until `check` holds; integration tests wait on the broker's state, not on sleeps. */
export const eventually = <A>(
  probe: () => Promise<A>,
  check: (value: A) => boolean,
  options: { readonly timeoutMs?: number; readonly what?: string } = {}
) =>
  Effect.promise(async () => {
    const deadline = Date.now() + (options.timeoutMs ?? 15_000)
    let last: A = await probe()
    while (!check(last)) {
      if (Date.now() > deadline) {
        throw new Error(`Timed out waiting for ${options.what ?? "condition"}; last value: ${JSON.stringify(last)}`)
      }
      await new Promise((resolve) => setTimeout(resolve, 50))
      last = await probe()
    }
    return last
  })

/** Runs `rabbitmqctl` against the broker at `AMQP_URL`'s node; its output. */
export const rabbitmqctl = (...args: ReadonlyArray<string>) =>
  new Promise<string>((resolve, reject) =>
    execFile("rabbitmqctl", args, (error, stdout) => (error ? reject(error) : resolve(stdout))))

/**
 * Counts a quorum queue's messages, ready and unacknowledged together, from the queue's own Raft
 * state, through `run` (a `rabbitmqctl` for the node that holds it). Not `rabbitmqctl list_queues
 * messages`: for quorum queues that figure is a statistic the broker refreshes every few seconds, so
 * right after a run it can still read 0 (or the count before), and a check on it could pass on a
 * broker that had lost nothing only by luck. Holds for RabbitMQ 3.10 through 4.x (rabbit_fifo).
 */
export const countMessages = async (run: (...args: ReadonlyArray<string>) => Promise<string>, queue: string) => {
  const output = await run(
    "eval",
    `{ok, Q} = rabbit_amqqueue:lookup(rabbit_misc:r(<<"/">>, queue, <<${JSON.stringify(queue)}/utf8>>)), ` +
      `{Name, _} = amqqueue:get_pid(Q), ` +
      `{ok, {_, Total}, _} = ra:local_query({Name, node()}, fun rabbit_fifo:query_messages_total/1), Total.`
  )
  const total = Number(output.trim())
  if (!Number.isInteger(total)) throw new Error(`rabbitmqctl eval did not count the messages of ${queue}: ${output.trim()}`)
  return total
}

/**
 * Messages in a queue, ready and unacknowledged together, as the broker counts them at this moment.
 * Unlike `checkQueue` (ready only), this tells an acked delivery from one still held by a consumer.
 */
export const queueDepth = (queue: string) => Effect.promise(() => countMessages(rabbitmqctl, queue))

/** How the broker has `queue` declared: its type, durability and arguments, as rabbitmqctl prints them. */
export const queueDeclaration = (queue: string) =>
  Effect.promise(async () => {
    const output = await rabbitmqctl("list_queues", "--quiet", "--no-table-headers", "name", "type", "durable", "arguments")
    const row = output.split("\n").map((line) => line.split("\t")).find(([name]) => name === queue)
    return row === undefined ? undefined : { type: row[1], durable: row[2] === "true", arguments: row[3] ?? "" }
  })

/** Resolves with the next `count` messages on `queue` (acked), from one consumer of the test's own. */
export const nextMessages = (channel: amqp.Channel, queue: string, count: number) =>
  Effect.async<ReadonlyArray<amqp.ConsumeMessage>>((resume) => {
    let consumerTag: string | undefined
    const received: Array<amqp.ConsumeMessage> = []
    channel.consume(queue, (message) => {
      // Past `count`, a message is left unacked: the broker takes it back when the consumer is cancelled.
      if (message === null || received.length === count) return
      channel.ack(message)
      received.push(message)
      if (received.length < count) return
      if (consumerTag !== undefined) channel.cancel(consumerTag).catch(() => undefined)
      resume(Effect.succeed(received))
    }).then(({ consumerTag: tag }) => {
      consumerTag = tag
      if (received.length === count) channel.cancel(tag).catch(() => undefined)
    })
  })

/** Resolves with the next message on `queue` (acked), from a consumer of the test's own. */
export const nextMessage = (channel: amqp.Channel, queue: string) =>
  Effect.map(nextMessages(channel, queue, 1), (messages) => messages[0]!)
