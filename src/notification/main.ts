import { runService } from "../runtime/runService"
import { NotificationServiceLive } from "./NotificationService"

runService(NotificationServiceLive)
