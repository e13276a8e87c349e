import { describe, expect, it } from "@effect/vitest"
import { Context, Effect, Exit, Layer, Option, Scope, SubscriptionRef } from "effect"
import { AmqpConnection } from "../../src/messaging/AmqpConnection"
import { CommandConsumer, CommandConsumerLive } from "../../src/notification/CommandConsumer"
import { NotificationSender } from "../../src/notification/NotificationSender"
import { CommandPublisher, CommandPublisherLive } from "../../src/order/CommandPublisher"
import { testConfig } from "../support/broker"
import { faultQueue, until } from "../support/faultRig"
import { FAULT_AMQP_URL } from "../support/privateBroker"

/**
 * In-process and fast: each service's sessions come back on the next connection after the one
 * they ran on closed. (The consumer once stayed unsubscribed: its session was not interrupted
 * when the connection was lost while it was closing.)
 */
const services = (queue: string) =>
  Layer.merge(CommandConsumerLive, CommandPublisherLive).pipe(
    Layer.provide(NotificationSender.Default),
    Layer.provideMerge(AmqpConnection.layer({ connectionName: "test-resubscribe" })),
    Layer.provide(testConfig({ AMQP_URL: FAULT_AMQP_URL, COMMAND_QUEUE: queue, NOTIFICATION_SEND_DELAY_MS: 0 }))
  )

describe("sessions after a lost connection", () => {
  it.scopedLive("the consumer subscribes again and the publisher reopens its confirm channel, every time", () =>
    Effect.gen(function*() {
      const queue = yield* faultQueue("resubscribe")
      // Closed with a deadline: a session stuck on a dead connection must fail this test, not hang it.
      const scope = yield* Scope.make()
      yield* Effect.addFinalizer(() => Scope.close(scope, Exit.void).pipe(Effect.disconnect, Effect.timeout("10 seconds"), Effect.ignore))
      const context = yield* Layer.buildWithScope(services(queue), scope)
      const connection = Context.get(context, AmqpConnection)
      const consumer = Context.get(context, CommandConsumer)
      const publisher = Context.get(context, CommandPublisher)
      const bothReady = Effect.all([consumer.isReady, publisher.isReady]).pipe(Effect.map(([c, p]) => c && p))

      for (let round = 1; round <= 3; round++) {
        yield* until(bothReady, (ready) => ready, { what: `both sessions open (round ${round})`, timeoutMs: 10_000 })
        const lost = Option.getOrThrow(yield* SubscriptionRef.get(connection.state))
        yield* Effect.promise(() => lost.close()).pipe(Effect.timeout("5 seconds"), Effect.orDie)
        yield* until(
          SubscriptionRef.get(connection.state),
          (current) => Option.isSome(current) && current.value !== lost,
          { what: "a new connection", timeoutMs: 10_000 }
        )
      }
      yield* until(bothReady, (ready) => ready, { what: "both sessions open after the last drop", timeoutMs: 10_000 })
      expect(yield* bothReady).toBe(true)
    }), 30_000)
})
