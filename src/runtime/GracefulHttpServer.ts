import { HttpApp, HttpServer, HttpServerResponse } from "@effect/platform"
import * as NodeHttpServer from "@effect/platform-node/NodeHttpServer"
import { type Config, Effect, Layer } from "effect"
import { createServer } from "node:http"
import { SharedConfig } from "../config/SharedConfig"
import { atMost } from "./atMost"

export type RequestMiddleware = (app: HttpApp.Default) => HttpApp.Default

/**
 * Serves `routes` on a Node HTTP server on `port` that shuts down without stranding a request.
 *
 * The platform's shutdown detaches the request handler, then waits for every connection to end.
 * A keep-alive client that sends its next request in between gets no answer, and its connection
 * never ends, so the service never exits. Here, before that, the server stops listening, answers
 * what is in flight with `Connection: close` (so clients do not reuse those connections), waits
 * for those answers (at most SHUTDOWN_TIMEOUT_MS), and only then closes what connections remain.
 */
export const serveGracefully = <E, R>(
  routes: (trackRequests: RequestMiddleware) => Layer.Layer<never, E, R>,
  port: Config.Config<number>
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

      const drainInFlight = Effect.async<void>((resume) => {
        closing = true
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
