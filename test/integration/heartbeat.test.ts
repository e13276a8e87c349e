import { describe, expect, it } from "@effect/vitest"
import { Effect, Layer, Option, Stream } from "effect"
import { execFile } from "node:child_process"
import { AmqpConnection } from "../../src/messaging/AmqpConnection"
import { AMQP_URL, eventually, testConfig } from "../support/broker"
import { recordingLogger } from "../support/logs"
import { tcpProxy } from "../support/tcpProxy"

const broker = new URL(AMQP_URL)

/** The next connection the service opens. */
const nextConnection = AmqpConnection.pipe(
  Effect.flatMap((connection) => connection.state.changes.pipe(Stream.filter(Option.isSome), Stream.runHead)),
  Effect.map((connection) => Option.flatten(connection).pipe(Option.getOrThrow))
)

/** The heartbeat RabbitMQ negotiated with the connection named `name`, in seconds. */
const negotiatedHeartbeat = (name: string) =>
  Effect.promise(() =>
    new Promise<number | undefined>((resolve, reject) =>
      execFile("rabbitmqctl", ["list_connections", "client_properties", "timeout", "--formatter", "json"], (error, stdout) => {
        if (error) return reject(error)
        const rows = JSON.parse(stdout) as Array<{ client_properties: Array<[string, string, unknown]>; timeout: number }>
        const row = rows.find((row) => row.client_properties.some(([key, , value]) => key === "connection_name" && value === name))
        resolve(row?.timeout)
      })
    )
  )

describe("AMQP heartbeats", () => {
  it.scopedLive("asks for AMQP_HEARTBEAT_S, unless AMQP_URL sets heartbeat itself", () =>
    Effect.gen(function*() {
      const name = `test-heartbeat-${process.pid}-${Date.now()}`
      for (const [env, expected] of [
        [{ AMQP_HEARTBEAT_S: 7 }, 7],
        [{ AMQP_HEARTBEAT_S: 7, AMQP_URL: `${AMQP_URL}?heartbeat=3` }, 3]
      ] as const) {
        yield* Effect.gen(function*() {
          yield* nextConnection
          expect(yield* eventually(() => Effect.runPromise(negotiatedHeartbeat(name)), (timeout) => timeout !== undefined)).toBe(expected)
        }).pipe(
          Effect.provide(AmqpConnection.layer({ connectionName: name }).pipe(Layer.provide(testConfig(env)))),
          Effect.scoped
        )
      }
    }))

  it.scopedLive("notices a peer that stops answering within about twice the heartbeat, and reconnects", () =>
    Effect.gen(function*() {
      const proxy = yield* tcpProxy({ host: broker.hostname, port: Number(broker.port || 5672) })
      const url = new URL(AMQP_URL)
      url.port = String(proxy.port)
      const logs = recordingLogger()
      yield* Effect.gen(function*() {
        const first = yield* nextConnection
        const lost = Effect.async<number>((resume) => void first.once("close", () => resume(Effect.succeed(Date.now()))))
        const stalledAt = Date.now()
        proxy.stall()
        const noticedAfter = (yield* lost) - stalledAt
        // amqplib gives up after two missed heartbeats; the bound leaves room for a slow machine.
        expect(noticedAfter).toBeGreaterThanOrEqual(1000)
        expect(noticedAfter).toBeLessThan(5000)
        const second = yield* nextConnection
        expect(second).not.toBe(first)
        expect(logs.lines.some((line) => /^Connection to .* lost \(.*heartbeat.*\); reconnecting$/i.test(line))).toBe(true)
      }).pipe(
        Effect.provide(AmqpConnection.layer({ connectionName: "test-heartbeat-stall" }).pipe(
          Layer.provide(testConfig({ AMQP_URL: url.toString(), AMQP_HEARTBEAT_S: 1 })),
          Layer.provide(logs.layer)
        ))
      )
    }))
})
