import { describe, expect, it } from "@effect/vitest"
import { Context, Effect, Exit, Layer, Option, Scope, SubscriptionRef } from "effect"
import { AmqpConnection } from "../../src/messaging/AmqpConnection"
import { CommandConsumer, CommandConsumerLive } from "../../src/notification/CommandConsumer"
import { NotificationSender } from "../../src/notification/NotificationSender"
import { EventPublisher } from "../../src/notification/EventPublisher"
import { EventConsumer, EventConsumerLive } from "../../src/order/EventConsumer"
import { OutboxRelay, OutboxRelayLive } from "../../src/order/OutboxRelay"
import { DatabaseLive } from "../../src/order/store/Database"
import { OrderStore } from "../../src/order/store/OrderStore"
import { testConfig } from "../support/broker"
import { eventsQueueOf, temporaryFolder } from "../support/services"
import { faultQueue, until } from "../support/faultRig"
import { FAULT_AMQP_URL } from "../support/privateBroker"

/**
 * In-process and fast: each service's sessions (both consumers, both confirm channels) come back
 * on the next connection after the one they ran on closed. (The consumer once stayed unsubscribed:
 * its session was not interrupted when the connection was lost while it was closing.)
 */
const services = (queue: string, folder: string) =>
  Layer.mergeAll(CommandConsumerLive, EventPublisher.Live, OutboxRelayLive, EventConsumerLive).pipe(
    Layer.provide(NotificationSender.Default),
    Layer.provideMerge(EventPublisher.Live),
    Layer.provide(OrderStore.Default),
    Layer.provideMerge(AmqpConnection.layer({ connectionName: "test-resubscribe" })),
    Layer.provide(DatabaseLive),
    Layer.provide(testConfig({
      AMQP_URL: FAULT_AMQP_URL,
      COMMAND_QUEUE: queue,
      ORDER_EVENTS_QUEUE: eventsQueueOf(queue),
      DATABASE_URL: `${folder}/orders.db`,
      NOTIFICATION_SEND_DELAY_MS: 0
    }))
  )

describe("sessions after a lost connection", () => {
  it.scopedLive("both consumers subscribe again and both publishers reopen their confirm channels, every time", () =>
    Effect.gen(function*() {
      const queue = yield* faultQueue("resubscribe")
      const folder = yield* temporaryFolder
      // Closed with a deadline: a session stuck on a dead connection must fail this test, not hang it.
      const scope = yield* Scope.make()
      yield* Effect.addFinalizer(() => Scope.close(scope, Exit.void).pipe(Effect.disconnect, Effect.timeout("10 seconds"), Effect.ignore))
      const context = yield* Layer.buildWithScope(services(queue, folder), scope)
      const connection = Context.get(context, AmqpConnection)
      const bothReady = Effect.all([
        Context.get(context, CommandConsumer).isReady,
        Context.get(context, EventPublisher).isReady,
        Context.get(context, OutboxRelay).brokerReady,
        Context.get(context, EventConsumer).isReady
      ]).pipe(Effect.map((ready) => ready.every(Boolean)))

      for (let round = 1; round <= 3; round++) {
        yield* until(bothReady, (ready) => ready, { what: `every session open (round ${round})`, timeoutMs: 10_000 })
        const lost = Option.getOrThrow(yield* SubscriptionRef.get(connection.state))
        yield* Effect.promise(() => lost.close()).pipe(Effect.timeout("5 seconds"), Effect.orDie)
        yield* until(
          SubscriptionRef.get(connection.state),
          (current) => Option.isSome(current) && current.value !== lost,
          { what: "a new connection", timeoutMs: 10_000 }
        )
      }
      yield* until(bothReady, (ready) => ready, { what: "every session open after the last drop", timeoutMs: 10_000 })
      expect(yield* bothReady).toBe(true)
    }), 30_000)
})
