import { Data, Duration, Effect, Random } from "effect"
import type { SendNotificationCommand } from "../contracts/SendNotificationCommand"
import { tracingEnabled } from "../observability/TraceContext"
import { NotificationConfig } from "./NotificationConfig"

/** A send that failed and may succeed if tried again. */
export class NotificationFailed extends Data.TaggedError("NotificationFailed")<{
  readonly orderId: string
  readonly reason: string
}> {
  override get message() {
    return `Notification for order ${this.orderId} failed: ${this.reason}`
  }
}

/**
 * "Sends" a notification: the original demo's log line, then `NOTIFICATION_SEND_DELAY_MS` of
 * simulated work. Fails at `NOTIFICATION_FAILURE_RATE`, to show retries and dead-lettering.
 */
export class NotificationSender extends Effect.Service<NotificationSender>()("notification/NotificationSender", {
  effect: Effect.gen(function*() {
    const { failureRate, sendDelay } = yield* NotificationConfig
    // A zero delay skips the timer: even `setTimeout(0)` waits a millisecond, per command.
    const simulatedWork = Duration.isZero(sendDelay) ? Effect.void : Effect.sleep(sendDelay)
    const simulatedOutcome = (command: SendNotificationCommand) =>
      failureRate === 0 ? Effect.void : Effect.flatMap(Random.next, (draw) =>
        draw < failureRate
          ? Effect.fail(new NotificationFailed({ orderId: command.orderId, reason: "simulated failure" }))
          : Effect.void)
    const send = (command: SendNotificationCommand): Effect.Effect<void, NotificationFailed> =>
      Effect.logInfo(`Sending notification for order ${command.orderId}`).pipe(
        Effect.zipRight(simulatedWork),
        Effect.zipRight(simulatedOutcome(command))
      )
    if (!(yield* tracingEnabled)) return { send } as const
    return {
      send: (command: SendNotificationCommand) =>
        send(command).pipe(Effect.withSpan("NotificationSender.send", {
          attributes: { orderId: command.orderId },
          // A stack trace per span costs more than the rest of a send when the delay is 0.
          captureStackTrace: false
        }))
    } as const
  })
}) {}
