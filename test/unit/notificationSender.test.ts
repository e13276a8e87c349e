import { describe, expect, it } from "@effect/vitest"
import { ConfigProvider, Effect, Exit, Fiber, Layer, Logger, Option, TestClock } from "effect"
import { makeOrderId, UserId } from "../../src/domain/Order"
import { SendNotificationCommand } from "../../src/contracts/SendNotificationCommand"
import { NotificationSender } from "../../src/notification/NotificationSender"

const command = new SendNotificationCommand({ orderId: makeOrderId(), userId: UserId.make(7) })

const senderWith = (env: Record<string, string>) =>
  NotificationSender.Default.pipe(Layer.provide(Layer.setConfigProvider(ConfigProvider.fromMap(new Map(Object.entries(env))))))

describe("NotificationSender", () => {
  it.effect("logs the original demo's line, then takes 500 ms of simulated time, not real time", () => {
    const lines: Array<unknown> = []
    const recordingLogger = Logger.replace(Logger.defaultLogger, Logger.make(({ message }) => lines.push(message)))
    return Effect.gen(function*() {
      const sender = yield* NotificationSender
      const sending = yield* Effect.fork(sender.send(command))
      yield* TestClock.adjust("499 millis")
      expect(lines).toEqual([[`Sending notification for order ${command.orderId}`]])
      expect(Option.isNone(yield* Fiber.poll(sending))).toBe(true)
      yield* TestClock.adjust("1 millis")
      expect(Exit.isSuccess(yield* Fiber.await(sending))).toBe(true)
    }).pipe(Effect.provide(Layer.merge(senderWith({}), recordingLogger)))
  })

  it.effect("fails with NotificationFailed at a failure rate of 1", () =>
    Effect.gen(function*() {
      const sender = yield* NotificationSender
      const result = yield* Effect.flip(sender.send(command))
      expect(result._tag).toBe("NotificationFailed")
      expect(result.orderId).toBe(command.orderId)
    }).pipe(Effect.provide(senderWith({ NOTIFICATION_FAILURE_RATE: "1", NOTIFICATION_SEND_DELAY_MS: "0" }))))

  it.effect("never fails at the default failure rate of 0", () =>
    Effect.gen(function*() {
      const sender = yield* NotificationSender
      const results = yield* Effect.all(Array.from({ length: 200 }, () => Effect.exit(sender.send(command))))
      expect(results.every(Exit.isSuccess)).toBe(true)
    }).pipe(Effect.provide(senderWith({ NOTIFICATION_SEND_DELAY_MS: "0" }))))
})
