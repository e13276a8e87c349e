import { HttpApi, OpenApi } from "@effect/platform"
import { HealthApi } from "../runtime/Health"

/** The notification service's operational HTTP API, on `NOTIFICATION_HEALTH_PORT`. */
export class NotificationApi extends HttpApi.make("notification-service")
  .add(HealthApi)
  .annotate(OpenApi.Title, "Notification service")
{}
