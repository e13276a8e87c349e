import { HttpApiBuilder } from "@effect/platform"
import { Config, Effect, Layer } from "effect"
import { Healthy, NotReady } from "../runtime/Health"
import { MetricsRoute, NOTIFICATION_METRICS } from "../observability/Metrics"
import { serveGracefully } from "../runtime/GracefulHttpServer"
import { answerEveryErrorWithJson } from "../runtime/HttpErrors"
import { CommandConsumer } from "./CommandConsumer"
import { NotificationApi } from "./NotificationApi"
import { NotificationConfig } from "./NotificationConfig"

const HealthHandlers = HttpApiBuilder.group(NotificationApi, "health", (handlers) =>
  Effect.gen(function*() {
    const consumer = yield* CommandConsumer
    return handlers
      .handle("live", () => Effect.succeed(new Healthy({ status: "ok" })))
      .handle("ready", () =>
        Effect.if(consumer.isReady, {
          onTrue: () => Effect.succeed(new Healthy({ status: "ok" })),
          onFalse: () => Effect.fail(new NotReady({ message: "Not subscribed to the command queue" }))
        }))
  }))

/** Health and metrics on `NOTIFICATION_HEALTH_PORT`. */
export const HttpLive = serveGracefully(
  (trackRequests) =>
    HttpApiBuilder.serve(trackRequests).pipe(
      Layer.provide(HttpApiBuilder.middleware(answerEveryErrorWithJson)),
      Layer.provide(MetricsRoute({ serviceName: "notification-service", include: NOTIFICATION_METRICS })),
      Layer.provide(HttpApiBuilder.api(NotificationApi).pipe(Layer.provide(HealthHandlers)))
    ),
  Config.map(NotificationConfig, ({ healthPort }) => healthPort)
)
