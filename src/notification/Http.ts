import { HttpApiBuilder } from "@effect/platform"
import { Config, Effect, Layer } from "effect"
import { live, ready } from "../runtime/Health"
import { MetricsRoute, NOTIFICATION_METRICS } from "../observability/Metrics"
import { serveGracefully } from "../runtime/GracefulHttpServer"
import { answerEveryErrorWithJson } from "../runtime/HttpErrors"
import { CommandConsumer } from "./CommandConsumer"
import { NotificationApi } from "./NotificationApi"
import { NotificationConfig } from "./NotificationConfig"

const HealthHandlers = HttpApiBuilder.group(NotificationApi, "health", (handlers) =>
  Effect.gen(function*() {
    const consumer = yield* CommandConsumer
    return handlers.handle("live", live).handle("ready", ready(consumer.isReady, "Not subscribed to the command queue"))
  }))

/** Health and metrics on `NOTIFICATION_HEALTH_PORT`. */
export const HttpLive = serveGracefully(
  HttpApiBuilder.serve().pipe(
    Layer.provide(HttpApiBuilder.middleware(answerEveryErrorWithJson)),
    Layer.provide(MetricsRoute({ serviceName: "notification-service", include: NOTIFICATION_METRICS })),
    Layer.provide(HttpApiBuilder.api(NotificationApi).pipe(Layer.provide(HealthHandlers)))
  ),
  Config.map(NotificationConfig, ({ healthPort }) => healthPort)
)
