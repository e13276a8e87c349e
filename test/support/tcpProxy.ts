import { Effect } from "effect"
import * as net from "node:net"

/**
 * A TCP proxy of the test's own in front of a broker, on a free local port. `stall` makes every
 * connection open through it so far stop forwarding in both directions without closing anything:
 * a half-open peer, as a dead network path or a frozen host looks. Connections opened later are
 * forwarded normally. Closed with the scope.
 */
export const tcpProxy = (target: { readonly host: string; readonly port: number }) =>
  Effect.acquireRelease(
    Effect.async<{ readonly port: number; readonly stall: () => void; readonly server: net.Server; readonly sockets: Set<net.Socket> }>(
      (resume) => {
        const sockets = new Set<net.Socket>()
        const stalls: Array<() => void> = []
        const server = net.createServer((client) => {
          const upstream = net.connect(target.port, target.host)
          for (const socket of [client, upstream]) {
            sockets.add(socket)
            socket.on("error", () => undefined)
            socket.on("close", () => {
              sockets.delete(socket)
              client.destroy()
              upstream.destroy()
            })
          }
          client.pipe(upstream)
          upstream.pipe(client)
          stalls.push(() => {
            client.unpipe(upstream)
            upstream.unpipe(client)
            client.pause()
            upstream.pause()
          })
        })
        server.listen(0, "127.0.0.1", () => {
          const port = (server.address() as net.AddressInfo).port
          resume(Effect.succeed({ port, stall: () => stalls.splice(0).forEach((stall) => stall()), server, sockets }))
        })
      }
    ),
    ({ server, sockets }) =>
      Effect.async<void>((resume) => {
        for (const socket of sockets) socket.destroy()
        server.close(() => resume(Effect.void))
      })
  ).pipe(Effect.map(({ port, stall }) => ({ port, stall })))
