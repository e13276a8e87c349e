import { NotificationServiceLive } from "./notification/NotificationService"
import { OrderServiceLive } from "./order/OrderService"
import { runService } from "./runtime/runService"

// `npm start`: both services in one process, each with its own broker connection, as they would
// run apart (`src/order/main.ts`, `src/notification/main.ts`).
runService(OrderServiceLive, NotificationServiceLive)
