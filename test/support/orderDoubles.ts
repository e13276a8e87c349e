import { NodeHttpServer } from "@effect/platform-node"
import * as SqlClient from "@effect/sql/SqlClient"
import { SqlError } from "@effect/sql/SqlError"
import { ConfigProvider, Effect, Layer } from "effect"
import { join } from "node:path"
import { HttpRoutes } from "../../src/order/Http"
import { Orders } from "../../src/order/Orders"
import { OutboxRelay } from "../../src/order/OutboxRelay"
import { databaseLayer, DatabaseTarget } from "../../src/order/store/Database"
import { OrderStore } from "../../src/order/store/OrderStore"
import { temporaryFolder } from "./services"

/** The real order store on a SQLite file of its own, migrated, removed with the layer; its SQL client too. */
const sqliteDatabase = Layer.unwrapScoped(
  Effect.map(temporaryFolder, (folder) =>
    OrderStore.Default.pipe(Layer.provideMerge(databaseLayer(DatabaseTarget.Sqlite({ filename: join(folder, "orders.db") })))))
)

/** The real order store on a SQLite file of its own, migrated, removed with the layer. */
export const sqliteOrderStore: Layer.Layer<OrderStore, unknown> = sqliteDatabase

type OrderStoreShape = Parameters<typeof OrderStore.make>[0]

/**
 * A store every query of which fails as an unreachable database does; `overrides` replace some of
 * its methods (to block one, or give it a bug).
 */
export const failingOrderStore = (
  message = "connect ECONNREFUSED 127.0.0.1:5432",
  overrides: Partial<OrderStoreShape> = {}
): Layer.Layer<OrderStore> => {
  const fail = Effect.fail(new SqlError({ message }))
  return Layer.succeed(
    OrderStore,
    OrderStore.make({
      owner: "00000000-0000-4000-8000-000000000000",
      createOrder: () => fail,
      findOrder: () => fail,
      listOrders: () => fail,
      claimOutbox: () => fail,
      renewClaims: fail,
      markQueued: () => fail,
      outboxStats: fail,
      applyNotificationSent: () => fail,
      applyNotificationFailed: () => fail,
      expireIdempotencyKeys: () => fail,
      ping: fail,
      ...overrides
    })
  )
}

/** The real SQLite store with some of its methods wrapped or replaced (given the store and its SQL client). */
export const sqliteOrderStoreWith = (
  overrides: (store: OrderStore, sql: SqlClient.SqlClient) => Partial<OrderStoreShape>
): Layer.Layer<OrderStore, unknown> =>
  Layer.effect(
    OrderStore,
    Effect.map(Effect.all([OrderStore, SqlClient.SqlClient]), ([store, sql]) => OrderStore.make({ ...store, ...overrides(store, sql) }))
  ).pipe(Layer.provide(sqliteDatabase))

/**
 * An outbox relay with no broker behind it: each commit adds one pending command, as the real relay
 * counts them while the broker is away; a test empties or fills the outbox, or takes the broker
 * down, through `state`.
 */
export const relayDouble = (initial: { readonly pending?: number; readonly oldestSeconds?: number; readonly brokerUp?: boolean } = {}) => {
  const state = {
    pending: initial.pending ?? 0,
    oldestSeconds: initial.oldestSeconds ?? 0,
    brokerUp: initial.brokerUp ?? true,
    /** How many new orders were handed over once committed. */
    commits: 0
  }
  const layer = Layer.succeed(
    OutboxRelay,
    OutboxRelay.of({
      relayOnCommit: (_, commit) =>
        Effect.tap(commit, ({ replayed }) => {
          if (replayed) return
          state.commits++
          state.pending++
        }),
      backlog: () => ({ pending: state.pending, oldestSeconds: state.oldestSeconds }),
      brokerReady: Effect.sync(() => state.brokerUp)
    })
  )
  return { state, layer }
}

/** Configuration from `env` alone, so that the machine's environment does not leak in. */
export const withEnv = (env: Record<string, string>) =>
  Layer.setConfigProvider(ConfigProvider.fromMap(new Map(Object.entries(env))))

/**
 * The order API in memory: its routes on a test HTTP server (whose client is provided), the real
 * store on a SQLite file of its own unless told otherwise, and a relay double with no broker. The
 * store is provided to the test too, to see what was stored.
 */
export const orderApi = (options: {
  readonly store?: Layer.Layer<OrderStore, unknown>
  readonly relay?: ReturnType<typeof relayDouble>
  readonly env?: Record<string, string>
} = {}) =>
  HttpRoutes.pipe(
    Layer.provide(Orders.Default),
    Layer.provideMerge(options.store ?? sqliteOrderStore),
    Layer.provideMerge((options.relay ?? relayDouble()).layer),
    Layer.provideMerge(NodeHttpServer.layerTest),
    Layer.provide(withEnv(options.env ?? {}))
  )
