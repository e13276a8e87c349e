import * as amqp from "amqplib"
import { describe, expect, it } from "@effect/vitest"
import { readFileSync } from "node:fs"
import { createRequire } from "node:module"
import { dirname, join } from "node:path"
import { connectionInternals, writeFramesInBatches } from "../../src/messaging/amqplibFrameBatching"
import { AMQP_URL, uniqueQueueName } from "../support/broker"

// `writeFramesInBatches` wraps amqplib internals. These tests fail when an amqplib upgrade changes
// them, instead of the batching silently going without.
const PATCHED_VERSION = "2.3.1"

const require = createRequire(import.meta.url)
const installedAmqplib = JSON.parse(readFileSync(join(dirname(require.resolve("amqplib")), "package.json"), "utf8"))
const project = JSON.parse(readFileSync(join(import.meta.dirname, "../../package.json"), "utf8"))

describe("amqplib frame batching (writeFramesInBatches)", () => {
  it("is written against the amqplib version that is pinned and installed", () => {
    expect(project.dependencies.amqplib).toBe(PATCHED_VERSION)
    expect(installedAmqplib.version).toBe(PATCHED_VERSION)
  })

  it("finds the internals it wraps on a real connection, and writes a turn's publishes in one corked pass", async () => {
    const model = await amqp.connect(AMQP_URL)
    const queue = uniqueQueueName("frame-batching")
    try {
      const { muxer, stream } = connectionInternals(model)
      expect(typeof stream?.cork).toBe("function")
      expect(typeof stream?.uncork).toBe("function")
      expect(typeof muxer?._readIncoming).toBe("function")
      const unpatched = muxer!._readIncoming

      expect(writeFramesInBatches(model)).toBe(model)
      expect(muxer!._readIncoming).not.toBe(unpatched)

      // Count the corks and the socket's writes from here on.
      const socket = stream as unknown as {
        cork(): void
        uncork(): void
        _write: (...args: Array<unknown>) => void
        _writev: (...args: Array<unknown>) => void
      }
      const counts = { cork: 0, uncork: 0, write: 0, writev: 0 }
      for (const method of ["cork", "uncork", "_write", "_writev"] as const) {
        const original = socket[method].bind(socket) as (...args: Array<unknown>) => void
        const key = method === "_write" ? "write" : method === "_writev" ? "writev" : method
        socket[method] = (...args: Array<unknown>) => {
          counts[key]++
          original(...args)
        }
      }

      const channel = await model.createConfirmChannel()
      await channel.assertQueue(queue, { exclusive: true })
      const before = { ...counts }
      const publishes = 50
      for (let i = 0; i < publishes; i++) channel.sendToQueue(queue, Buffer.from(`{"n":${i}}`))
      await channel.waitForConfirms()

      expect(counts.cork - before.cork).toBeGreaterThan(0)
      expect(counts.uncork).toBe(counts.cork)
      // The 50 publishes left in far fewer socket writes than one each.
      const writes = counts.write - before.write + counts.writev - before.writev
      expect(counts.writev - before.writev).toBeGreaterThan(0)
      expect(writes).toBeLessThan(publishes / 5)
      // And all of them arrived.
      expect((await channel.checkQueue(queue)).messageCount).toBe(publishes)
    } finally {
      await model.close().catch(() => undefined)
    }
  })
})
