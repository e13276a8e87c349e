/**
 * The HTTP load: wrk where it is installed (`apt-get install wrk`), else autocannon.
 *
 * wrk is the one to use on a small machine: written in C, it drives ~20,000 requests/s with a
 * fraction of a core, where autocannon (Node) takes most of one of the two cores the services
 * need, and so measures itself as much as them.
 */
import autocannon from "autocannon"
import { spawn, spawnSync } from "node:child_process"
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
