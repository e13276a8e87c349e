import { HttpApp, HttpServer, HttpServerResponse } from "@effect/platform"
import * as NodeHttpServer from "@effect/platform-node/NodeHttpServer"
import { Config, Effect, Layer, Option } from "effect"
import { createServer, type IncomingMessage, type Server, type ServerResponse } from "node:http"
import { SharedConfig } from "../config/SharedConfig"
import { atMost } from "./atMost"

export type RequestMiddleware = (app: HttpApp.Default) => HttpApp.Default

/**
 * A route served by a plain Node handler ahead of the Effect routes, for a hot path whose cost in
 * the generic pipeline was measured to matter (see `src/order/CreateOrderFastPath.ts`). `matches`
 * must be cheap and must not touch the request; what it declines goes to the routes unchanged.
 * `handle` must answer every request it is given, through `response`.
 */
export interface FastRoute {
  readonly matches: (request: IncomingMessage) => boolean
  readonly handle: (request: IncomingMessage, response: ServerResponse) => void
}

/**
 * Lets `take` see each request before the platform's handler does. Node calls every 'request'
 * listener in turn and gives none a way to stop the others, so the one place to route ahead of the
 * platform is the server's own `emit`, which Node's HTTP parser calls for each request.
 */
const routeAheadOfListeners = (server: Server, take: (request: IncomingMessage, response: ServerResponse) => boolean) => {
  const emit = server.emit
  server.emit = function(this: Server, event: string | symbol, ...args: Array<unknown>) {
    if (event === "request" && take(args[0] as IncomingMessage, args[1] as ServerResponse)) return true
    return Reflect.apply(emit, this, [event, ...args]) as boolean
  } as Server["emit"]
}

/**
 * Serves `routes` on a Node HTTP server on `port` that shuts down without stranding a request.
 *
 * The platform's shutdown detaches the request handler, then waits for every connection to end.
 * A keep-alive client that sends its next request in between gets no answer, and its connection
 * never ends, so the service never exits. Here, before that, the server stops listening, answers
 * what is in flight with `Connection: close` (so clients do not reuse those connections), waits
 * for those answers (at most SHUTDOWN_TIMEOUT_MS), and only then closes what connections remain.
 *
 * `fastRoute`, if it builds to a route, sees each request first; its requests are drained alike.
 */
export const serveGracefully = <E, R, E2 = never, R2 = never>(
  routes: (trackRequests: RequestMiddleware) => Layer.Layer<never, E, R>,
  port: Config.Config<number>,
  fastRoute?: Effect.Effect<Option.Option<FastRoute>, E2, R2>
) =>
  Layer.unwrapEffect(
    Effect.gen(function*() {
      const { shutdownTimeout } = yield* SharedConfig
      const server = createServer()
      let closing = false
      let inFlight = 0
      let whenIdle: (() => void) | undefined
      const finished = () => {
        if (--inFlight === 0) whenIdle?.()
      }

      const closeWhenClosing = (_: unknown, response: HttpServerResponse.HttpServerResponse) =>
        Effect.succeed(closing ? HttpServerResponse.setHeader(response, "connection", "close") : response)

      const trackRequests: RequestMiddleware = (app) =>
        Effect.suspend(() => {
          inFlight++
          return Effect.zipRight(HttpApp.appendPreResponseHandler(closeWhenClosing), app)
        }).pipe(Effect.ensuring(Effect.sync(finished)))

      // The fast route's answers not yet begun, to be marked `Connection: close` when shutdown starts.
      const fastInFlight = new ResponseSlots()
      const fast = fastRoute === undefined ? Option.none() : yield* fastRoute
      if (Option.isSome(fast)) {
        const { handle, matches } = fast.value
        routeAheadOfListeners(server, (request, response) => {
          if (!matches(request)) return false
          inFlight++
          if (closing) response.setHeader("connection", "close")
          const slot = fastInFlight.add(response)
          // 'close' follows the last byte of the answer, or the client going away.
          response.once("close", () => {
            fastInFlight.remove(slot)
            finished()
          })
          handle(request, response)
          return true
        })
      }

      const drainInFlight = Effect.async<void>((resume) => {
        closing = true
        fastInFlight.forEach((response) => {
          if (!response.headersSent) response.setHeader("connection", "close")
        })
        server.close() // stop listening; also closes the idle keep-alive connections
        if (inFlight === 0) resume(Effect.void)
        else whenIdle = () => resume(Effect.void)
      }).pipe(
        atMost(shutdownTimeout),
        Effect.zipRight(Effect.sync(() => server.closeAllConnections()))
      )

      // Built after the routes, so this finalizer runs before theirs detaches the handler.
      return Layer.scopedDiscard(Effect.addFinalizer(() => drainInFlight)).pipe(
        Layer.provide(routes(trackRequests)),
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
 * were promoted to the old generation and left there for a full collection to reclaim. Under the
 * benchmark that was most of the megabyte promoted at each minor collection; with these slots the
 * order service promotes less than half as much (README, Performance). Clearing a slot leaves no
 * reference behind.
 */
class ResponseSlots {
  private readonly slots: Array<ServerResponse | undefined> = []
  private readonly freeSlots: Array<number> = []

  add(response: ServerResponse): number {
    const slot = this.freeSlots.pop() ?? this.slots.length
    this.slots[slot] = response
    return slot
  }

  remove(slot: number): void {
    this.slots[slot] = undefined
    this.freeSlots.push(slot)
  }

  forEach(f: (response: ServerResponse) => void): void {
    for (const response of this.slots) if (response !== undefined) f(response)
  }
}
