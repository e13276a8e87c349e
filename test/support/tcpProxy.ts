import { Effect } from "effect"
import * as net from "node:net"

/**
 * TCP proxies of the tests' own in front of a broker, on free local ports, each closed with the
 * scope: the network paths a test needs between one service and one node.
 */

interface Link {
  readonly port: number
  readonly url: string
}

interface Target {
  readonly host: string
  readonly port: number
}

const listen = (target: Target, onConnection: (client: net.Socket, upstream: net.Socket) => void) =>
  Effect.acquireRelease(
    Effect.async<{ readonly port: number; readonly server: net.Server; readonly sockets: Set<net.Socket> }>((resume) => {
      const sockets = new Set<net.Socket>()
      const server = net.createServer((client) => {
        const upstream = net.connect(target.port, target.host)
        for (const socket of [client, upstream]) {
          sockets.add(socket)
          socket.setNoDelay(true)
          socket.on("error", () => undefined)
          socket.on("close", () => sockets.delete(socket))
        }
        onConnection(client, upstream)
      })
      server.listen(0, "127.0.0.1", () => resume(Effect.succeed({ port: (server.address() as net.AddressInfo).port, server, sockets })))
    }),
    ({ server, sockets }) =>
      Effect.async<void>((resume) => {
        for (const socket of sockets) socket.destroy()
        server.close(() => resume(Effect.void))
      })
  ).pipe(Effect.map(({ port }): Link => ({ port, url: `amqp://guest:guest@127.0.0.1:${port}` })))

/**
 * Hands the broker's bytes on to the client `delayMs` late (in order; the client's bytes go
 * through at once): a slow network path, on which every confirm arrives that much later.
 */
export const slowLink = (target: Target, delayMs: number) =>
  listen(target, (client, upstream) => {
    client.pipe(upstream)
    // Timers of one duration fire in the order they were set: the bytes keep their order.
    upstream.on("data", (chunk: Buffer) => setTimeout(() => client.destroyed || client.write(chunk), delayMs))
    // What is still on its way to the client arrives before the close, as on a slow path.
    upstream.on("close", () => setTimeout(() => client.destroy(), delayMs))
    client.on("close", () => upstream.destroy())
  })

/**
 * Forwards both ways until `stall()`: from then on, every connection open through it carries
 * nothing more in either direction, and neither side's close reaches the other (a half-open peer:
 * a dead network path or a frozen host, where not even a FIN or RST gets through). Connections
 * opened later are forwarded normally.
 */
export const tcpProxy = (target: Target) =>
  Effect.gen(function*() {
    const stalls: Array<() => void> = []
    const link = yield* listen(target, (client, upstream) => {
      let stalled = false
      client.pipe(upstream)
      upstream.pipe(client)
      client.on("close", () => stalled || upstream.destroy())
      upstream.on("close", () => stalled || client.destroy())
      stalls.push(() => {
        stalled = true
        client.unpipe(upstream)
        upstream.unpipe(client)
        client.pause()
        upstream.pause()
      })
    })
    return { ...link, stall: () => stalls.splice(0).forEach((stall) => stall()) }
  })
