import type { SqlError } from "@effect/sql/SqlError"
import { Effect, Option } from "effect"
import { createHash } from "node:crypto"
import { makeOrderId, type OrderId, type UserId } from "../domain/Order"
import { encodeCommand, SendNotificationCommand } from "../contracts/SendNotificationCommand"
import { NO_LABELS } from "../observability/Metrics"
import { currentTraceHeaders } from "../observability/TraceContext"
import { OrderNotFound, OutboxFull, StoreUnavailable } from "./Errors"
import { OrderConfig } from "./OrderConfig"
import { ordersAccepted, ordersRefused, ordersReplayed, REFUSED_OUTBOX_FULL, REFUSED_STORE } from "./OrderMetrics"
import { OutboxRelay } from "./OutboxRelay"
import type { IdempotencyKeyReused, OrderRecord } from "./store/OrderRecord"
import { OrderStore } from "./store/OrderStore"

/** A store failure, logged, and told to the client as `StoreUnavailable` with `message`. */
const storeFailed = (message: string) => (error: SqlError) =>
  Effect.zipRight(
    Effect.logWarning(`The order store failed: ${error.message}`),
    Effect.fail(new StoreUnavailable({ message }))
  )

/** Creating an order: nothing was stored, try again. */
const storeUnavailable = (error: SqlError) => {
  ordersRefused.unsafeUpdate(1, REFUSED_STORE)
  return storeFailed("The order store is unavailable; nothing was stored. Retry later")(error)
}

const lookupFailed = storeFailed("The order store is unavailable. Retry later")

/** The request an `Idempotency-Key` stands for: its decoded body, so that formatting does not count. */
const requestHash = (userId: UserId) => createHash("sha256").update(JSON.stringify({ userId })).digest("base64url")

/**
 * Orders: each one is stored together with its `SendNotificationCommand` in one transaction (the
 * transactional outbox), and handed to the relay to publish it. Accepting an order therefore needs
 * the store, not the broker.
 */
export class Orders extends Effect.Service<Orders>()("order/Orders", {
  effect: Effect.gen(function*() {
    const store = yield* OrderStore
    const relay = yield* OutboxRelay
    const { outboxMaxPending } = yield* OrderConfig

    const outboxFull = Effect.suspend(() => {
      ordersRefused.unsafeUpdate(1, REFUSED_OUTBOX_FULL)
      return Effect.fail(new OutboxFull({
        message: `${outboxMaxPending} commands already wait for the broker; nothing was stored. Retry later`
      }))
    })

    const create = (userId: UserId, idempotencyKey: Option.Option<string>) =>
      Effect.gen(function*() {
        // While the outbox is full, a request with a key may still be a replay of one already
        // stored, which must get its first answer: only new orders are refused.
        const full = relay.backlog().pending >= outboxMaxPending
        if (full && Option.isNone(idempotencyKey)) return yield* outboxFull
        // Both fields are valid by construction (a fresh UUIDv7, a userId the API decoded).
        const command = new SendNotificationCommand({ orderId: makeOrderId(), userId }, true)
        const outboxEntry = {
          orderId: command.orderId,
          body: encodeCommand(command).toString("utf8"),
          // The request's trace goes on from the relay's publish.
          headers: yield* currentTraceHeaders
        }
        const created = yield* relay.relayOnCommit(
          outboxEntry,
          store.createOrder({
            ...outboxEntry,
            userId,
            idempotency: Option.map(idempotencyKey, (key) => ({ key, requestHash: requestHash(userId) })),
            replayOnly: full
          })
        ).pipe(
          Effect.catchTags({ SqlError: storeUnavailable, NewOrderRefused: () => outboxFull })
        )
        if (created.replayed) ordersReplayed.unsafeUpdate(1, NO_LABELS)
        else ordersAccepted.unsafeUpdate(1, NO_LABELS)
        return created
      }) satisfies Effect.Effect<
        { readonly order: OrderRecord; readonly replayed: boolean },
        OutboxFull | StoreUnavailable | IdempotencyKeyReused
      >

    const find = (orderId: OrderId) =>
      store.findOrder(orderId).pipe(
        Effect.catchTag("SqlError", lookupFailed),
        Effect.flatMap(Option.match({
          onNone: () => Effect.fail(new OrderNotFound({ message: `No order ${orderId}` })),
          onSome: Effect.succeed
        }))
      )

    /** A page of the user's orders, newest first, and the id to continue after (if there may be more). */
    const list = (userId: UserId, limit: number, after: Option.Option<OrderId>) =>
      store.listOrders({ userId, limit: limit + 1, before: after }).pipe(
        Effect.catchTag("SqlError", lookupFailed),
        Effect.map((rows) => ({
          orders: rows.slice(0, limit),
          next: rows.length > limit ? Option.some(rows[limit - 1]!.orderId) : Option.none<OrderId>()
        }))
      )

    return { create, find, list } as const
  })
}) {}
