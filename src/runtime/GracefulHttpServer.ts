import { HttpServer } from "@effect/platform"
import * as NodeHttpServer from "@effect/platform-node/NodeHttpServer"
import { type Config, Effect, Layer } from "effect"
import type { ServerResponse } from "node:http"
import { SharedConfig } from "../config/SharedConfig"
import { atMost } from "./atMost"
import { createLimitedServer } from "./HttpLimits"

/**
 * Serves `routes` on a Node HTTP server on `port` that shuts down without stranding a request.
 *
 * The platform's shutdown detaches the request handler, then waits for every connection to end.
 * A keep-alive client that sends its next request in between gets no answer, and its connection
 * never ends, so the service never exits. Here, before that, the server stops listening, answers
 * what is in flight with `Connection: close` (so clients do not reuse those connections), waits
 * for those answers (at most SHUTDOWN_TIMEOUT_MS), and only then closes what connections remain.
 *
 * Requests are counted on Node's own request and response, not in an Effect middleware: a request
 * whose connection the platform drops (a chunked body over the limit) never finishes its Effect, and
 * would have held every shutdown for the whole timeout.
 *
 * The server has the timeouts and limits of `HttpLimits`: a client that trickles its request is cut
 * off by them while the service runs, and by the end of the drain at shutdown (Node stops checking
 * the timeouts once the server closes); one still sending its headers is not waited for at all.
 */
export const serveGracefully = <E, R>(routes: Layer.Layer<never, E, R>, port: Config.Config<number>) =>
  Layer.unwrapEffect(
    Effect.gen(function*() {
      const { shutdownTimeout } = yield* SharedConfig
      const server = createLimitedServer()
      let closing = false
      let whenIdle: (() => void) | undefined
      const inFlight = new ResponseSlots()

      // Registered before the platform's own listener, so this runs first for every request.
      server.on("request", (_, response: ServerResponse) => {
        if (closing) response.setHeader("connection", "close")
        const slot = inFlight.add(response)
        // 'close' follows the last byte of the answer, or the connection going away.
        response.once("close", () => {
          inFlight.remove(slot)
          if (inFlight.size === 0) whenIdle?.()
        })
      })

      const drainInFlight = Effect.async<void>((resume) => {
        closing = true
        inFlight.forEach((response) => {
          if (!response.headersSent) response.setHeader("connection", "close")
        })
        server.close() // stop listening; also closes the idle keep-alive connections
        if (inFlight.size === 0) resume(Effect.void)
        else whenIdle = () => resume(Effect.void)
      }).pipe(
        atMost(shutdownTimeout),
        Effect.zipRight(Effect.sync(() => server.closeAllConnections()))
      )

      // Built after the routes, so this finalizer runs before theirs detaches the handler.
      return Layer.scopedDiscard(Effect.addFinalizer(() => drainInFlight)).pipe(
        Layer.provide(routes),
        HttpServer.withLogAddress,
        Layer.provide(NodeHttpServer.layer(() => server, { port: yield* port }))
      )
    })
  )

/**
 * The responses in flight, each in a slot of one array until it is removed; freed slots are reused.
 *
 * Not a `Set`: a long-lived `Set` that takes and drops a response per request kept responses (and
 * all they hold) alive through V8's young-generation collections after they were done, so they
 * were promoted to the old generation and left there for a full collection to reclaim (see
 * docs/performance.md). Clearing a slot leaves no reference behind.
 */
class ResponseSlots {
  private readonly slots: Array<ServerResponse | undefined> = []
  private readonly freeSlots: Array<number> = []
  size = 0

  add(response: ServerResponse): number {
    const slot = this.freeSlots.pop() ?? this.slots.length
    this.slots[slot] = response
    this.size++
    return slot
  }

  remove(slot: number): void {
    this.slots[slot] = undefined
    this.freeSlots.push(slot)
    this.size--
  }

  forEach(f: (response: ServerResponse) => void): void {
    for (const response of this.slots) if (response !== undefined) f(response)
  }
}
