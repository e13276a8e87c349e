import { runService } from "../runtime/runService"
import { OrderServiceLive } from "./OrderService"

runService(OrderServiceLive)
