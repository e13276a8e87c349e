/**
 * `npm run bench:floor`: what the HTTP framework costs before the project does anything. POST
 * /orders, 50 connections, against servers that answer 201 at once (bench/floor/servers.ts) and the
 * baseline's Express service (which also publishes to the broker), alternately for BENCH_ROUNDS
 * rounds (3), BENCH_DURATION s each (6), all under `node --import tsx`; medians, and each one's
 * median ratio to the baseline within a round. The broker is only the baseline's.
 */
import { deadLetterQueueOf } from "../../src/messaging/QueueTopology"
import { chooseLoad } from "../load"
import { connectBroker, freePort, median, prepareRunner, prepareVhost, startService, stopAll, uniqueQueue } from "../support"

const ROUNDS = Number(process.env.BENCH_ROUNDS ?? 3)
const DURATION_S = Number(process.env.BENCH_DURATION ?? 6)
const load = chooseLoad()
const SUBJECTS = ["raw", "router", "api", "baseline"] as const
type Subject = typeof SUBJECTS[number]

const main = async () => {
  const vhost = prepareVhost()
  process.env.AMQP_URL = vhost.url
  const broker = await connectBroker(vhost.url)
  const runner = await prepareRunner("tsx")
  const rates: Record<Subject, Array<number>> = { raw: [], router: [], api: [], baseline: [] }
  try {
    for (let round = 1; round <= ROUNDS; round++) {
      for (const subject of round % 2 === 1 ? SUBJECTS : [...SUBJECTS].reverse()) {
        const port = await freePort()
        const queue = uniqueQueue("floor.baseline")
        if (subject === "baseline") for (const q of [queue, deadLetterQueueOf(queue)]) broker.track(q)
        const service = subject === "baseline"
          ? startService(runner, "bench/baseline/order-service.ts", { PORT: String(port), COMMAND_QUEUE: queue })
          : startService(runner, "bench/floor/servers.ts", { PORT: String(port), FLOOR_SERVER: subject })
        try {
          if (subject === "baseline") await service.waitForLine(/running on port/, 30_000)
          else await service.waitForLine(/[Ll]istening on/, 30_000)
          const url = `http://127.0.0.1:${port}/orders`
          await load.postOrders(url, { connections: 50, durationS: 2 })
          const run = await load.postOrders(url, { connections: 50, durationS: DURATION_S })
          rates[subject].push(run.requestsPerSecond)
          console.log(`round ${round} ${subject}: ${Math.round(run.requestsPerSecond)} req/s, p99 ${run.p99Ms} ms, ${run.errors} errors`)
        } finally {
          await service.stop()
        }
      }
    }
  } finally {
    await stopAll()
    await broker.close()
    vhost.remove()
  }
  console.log(`\n$ BENCH_ROUNDS=${ROUNDS} BENCH_DURATION=${DURATION_S} npm run bench:floor   (${load.name}, all under tsx)`)
  console.log("| server | requests/s (median) | vs baseline (median of pairs) |\n| --- | --- | --- |")
  for (const subject of SUBJECTS) {
    const ratio = median(rates[subject].map((rate, i) => rate / rates.baseline[i]!))
    console.log(`| ${subject} | ${Math.round(median(rates[subject])).toLocaleString("en-US")} | ${ratio.toFixed(2)}x |`)
  }
}

main().catch((error) => {
  console.error(error)
  process.exit(1)
})
