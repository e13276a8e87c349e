/**
 * The HTTP load: wrk where it is installed (`apt-get install wrk`), else autocannon.
 *
 * wrk is the one to use on a small machine: written in C, it drives ~20,000 requests/s with a
 * fraction of a core, where autocannon (Node) takes most of one of the two cores the services
 * need, and so measures itself as much as them.
 */
import autocannon from "autocannon"
import { spawn, spawnSync } from "node:child_process"
import * as http from "node:http"
import { ROOT } from "./support"

export interface LoadResult {
  readonly requestsPerSecond: number
  readonly p50Ms: number
  readonly p99Ms: number
  /** Socket errors, timeouts and answers other than 2xx/3xx. */
  readonly errors: number
  readonly requests: number
}

export interface Load {
  readonly name: string
  readonly postOrders: (url: string, options: { readonly connections: number; readonly durationS: number }) => Promise<LoadResult>
}

const wrk: Load = {
  name: "wrk (1 thread)",
  postOrders: (url, { connections, durationS }) =>
    new Promise((resolve, reject) => {
      const child = spawn("wrk", ["-t1", `-c${connections}`, `-d${durationS}s`, "--timeout", "10s", "-s", `${ROOT}bench/post-orders.lua`, url])
      let output = ""
      child.stdout.on("data", (chunk: Buffer) => (output += chunk.toString("utf8")))
      child.stderr.on("data", (chunk: Buffer) => (output += chunk.toString("utf8")))
      child.once("error", reject)
      child.once("exit", (code) => {
        const summary = output.split("\n").find((line) => line.startsWith("{\"requests\""))
        if (code !== 0 || summary === undefined) return reject(new Error(`wrk exited with ${code}:\n${output}`))
        const run = JSON.parse(summary) as Record<"requests" | "durationUs" | "p50Us" | "p99Us" | "socketErrors" | "timeouts" | "non2xx", number>
        resolve({
          requestsPerSecond: run.requests / (run.durationUs / 1e6),
          p50Ms: run.p50Us / 1000,
          p99Ms: run.p99Us / 1000,
          errors: run.socketErrors + run.timeouts + run.non2xx,
          requests: run.requests
        })
      })
    })
}

const autocannonLoad: Load = {
  name: "autocannon (wrk not found: it loads the machine itself, so ratios come out lower)",
  postOrders: async (url, { connections, durationS }) => {
    const result = await autocannon({
      url,
      connections,
      duration: durationS,
      method: "POST",
      headers: { "content-type": "application/json" },
      body: JSON.stringify({ userId: 42 })
    })
    return {
      requestsPerSecond: result.requests.average,
      p50Ms: result.latency.p50,
      p99Ms: result.latency.p99,
      errors: result.errors + result.timeouts + result.non2xx,
      requests: result.requests.total
    }
  }
}

export const chooseLoad = (): Load => (spawnSync("wrk", ["--version"]).error === undefined ? wrk : autocannonLoad)

export interface PostedOrder {
  readonly orderId: string
  /** `Date.now()` as the request was sent: the clock the services' log timestamps use. */
  readonly sentAt: number
}

export interface PacedResult {
  readonly orders: ReadonlyArray<PostedOrder>
  readonly errors: number
  readonly requestsPerSecond: number
}

/**
 * POST /orders at a steady `rate` (one request every 1/rate s, on at most `connections` keep-alive
 * connections), keeping the orderId of each 201: wrk and autocannon do not give the bodies. Late
 * requests go out at once, so the rate holds unless all connections are busy.
 */
export const postOrdersPaced = async (
  url: string,
  { connections, durationS, rate }: { readonly connections: number; readonly durationS: number; readonly rate: number }
): Promise<PacedResult> => {
  const agent = new http.Agent({ keepAlive: true, maxSockets: connections })
  const body = JSON.stringify({ userId: 42 })
  const orders: Array<PostedOrder> = []
  let errors = 0
  let next = 0
  const total = Math.max(1, Math.round(rate * durationS))
  const start = performance.now()
  const post = () =>
    new Promise<void>((resolve) => {
      const sentAt = Date.now()
      const request = http.request(url, {
        method: "POST",
        agent,
        headers: { "content-type": "application/json", "content-length": Buffer.byteLength(body) }
      }, (response) => {
        let text = ""
        response.setEncoding("utf8")
        response.on("data", (chunk: string) => (text += chunk))
        response.on("end", () => {
          const orderId = response.statusCode === 201 ? (JSON.parse(text) as { order?: { orderId?: string } }).order?.orderId : undefined
          if (orderId === undefined) errors++
          else orders.push({ orderId, sentAt })
          resolve()
        })
      })
      request.setTimeout(10_000, () => request.destroy(new Error("timeout")))
      request.once("error", () => (errors++, resolve()))
      request.end(body)
    })
  const worker = async () => {
    for (let i = next++; i < total; i = next++) {
      const due = start + (i * 1000) / rate - performance.now()
      if (due > 0) await new Promise((resolve) => setTimeout(resolve, due))
      await post()
    }
  }
  await Promise.all(Array.from({ length: connections }, worker))
  const elapsedS = (performance.now() - start) / 1000
  agent.destroy()
  return { orders, errors, requestsPerSecond: (orders.length + errors) / elapsedS }
}
