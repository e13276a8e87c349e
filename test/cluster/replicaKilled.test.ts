import { describe, expect, it } from "@effect/vitest"
import { Effect } from "effect"
import { killAndDrain, report, until } from "../support/faultRig"
import { CLUSTER_NODES } from "../support/privateCluster"
import {
  clusterScenario,
  nodeUrls,
  orderUrl,
  repeatedSends,
  sampleOutbox,
  sendsSince,
  startOrderReplica,
  startSystem,
  startVerify,
  summary
} from "./clusterRig"
import { expectEveryOrderNotified } from "./expectations"
import { slowLink } from "../support/tcpProxy"

const RATE = 60
const ORDERS = RATE * 50
/** The outbox lease (src/order/store/OrderStore.ts, OutboxLease): a dead replica's claims lapse after it. */
const LEASE_MS = 10_000
/** How late the broker's bytes reach the victim replica. */
const LINK_DELAY_MS = 300

interface OutboxRow {
  readonly order_id: string
  readonly claimed_by: string | null
  readonly claimed_until: string | null
}

describe("an order replica SIGKILLed with commands in its outbox", () => {
  it.scopedLive("the other replica relays them once their claim lapses, and every accepted order is notified", () =>
    Effect.gen(function*() {
      const scenario = yield* clusterScenario("replica-kill")
      // The victim reaches its first node over a slow path: its confirms come late, so its relay
      // always has commands claimed and in flight when it is killed (on loopback they are in flight
      // for a millisecond or two, and a kill finds the outbox empty, or holding the other's).
      const slow = yield* slowLink({ host: "127.0.0.1", port: CLUSTER_NODES[0]!.amqpPort }, LINK_DELAY_MS)
      const victimUrls = [slow.url, ...nodeUrls(0).slice(1)]
      const system = yield* startSystem(scenario, { urlsOf: (i) => (i === 0 ? victimUrls : nodeUrls(i)) })
      const [victim, survivor] = system.orders as [typeof system.orders[0], typeof system.orders[0]]
      const outbox = yield* sampleOutbox(scenario)
      // Orders for the dead replica are retried by the client (same Idempotency-Key) until it is back:
      // room for them in flight, so that the survivor keeps getting its share meanwhile.
      const verify = yield* startVerify({ urls: system.orders.map(orderUrl), orders: ORDERS, rate: RATE, concurrency: 1000, waitSeconds: 90 })
      yield* until(Effect.sync(() => sendsSince(system.notifiers, verify.startedAt)), (n) => n >= 5 * RATE, {
        timeoutMs: 60_000,
        what: "the load to flow through to the notification services"
      })

      // Killed the moment the outbox holds a claim that has waited for its confirm for a while.
      const firstSeen = new Map<string, number>()
      const lingeringClaim = Effect.map(
        scenario.query<OutboxRow>("SELECT order_id, claimed_by, claimed_until FROM outbox WHERE claimed_by IS NOT NULL"),
        (rows) => {
          const now = Date.now()
          return rows.some((row) => {
            const claim = `${row.order_id} ${row.claimed_by} ${row.claimed_until}`
            if (!firstSeen.has(claim)) firstSeen.set(claim, now)
            return now - firstSeen.get(claim)! >= LINK_DELAY_MS / 2
          })
        }
      )
      yield* until(lingeringClaim, (lingering) => lingering, { timeoutMs: 30_000, what: "a claimed command waiting for its confirm" })
      const killedAt = Date.now()
      yield* killAndDrain(victim, "SIGKILL")
      const left = yield* scenario.query<OutboxRow>("SELECT order_id, claimed_by, claimed_until FROM outbox")

      // Follow each command left at the kill until it is gone from the outbox (confirmed by the broker).
      const goneAt = new Map<string, number>()
      yield* until(
        Effect.map(scenario.query<{ order_id: string }>("SELECT order_id FROM outbox"), (rows) => {
          const now = Date.now()
          const still = new Set(rows.map((row) => row.order_id))
          for (const row of left) if (!still.has(row.order_id) && !goneAt.has(row.order_id)) goneAt.set(row.order_id, now)
          return left.length - goneAt.size
        }),
        (remaining) => remaining === 0,
        { timeoutMs: LEASE_MS + 20_000, what: "the commands left at the kill to leave the outbox" }
      )
      // A command its (live) owner relayed leaves before its claim runs out; one the dead replica
      // held stays until the claim has lapsed, and only then can another replica take it.
      const orphaned = left.filter((row) => row.claimed_until !== null && goneAt.get(row.order_id)! >= Number(row.claimed_until))
      const orphanOwners = new Set(orphaned.map((row) => row.claimed_by))
      const takeover = orphaned.map((row) => goneAt.get(row.order_id)! - Number(row.claimed_until))
      const relayedAfterKill = orphaned.map((row) => goneAt.get(row.order_id)! - killedAt)
      // Only the survivor was running meanwhile: it relayed them. Their orders were then queued.
      const orphanStatus = orphaned.length === 0 ? [] : yield* scenario.query<{ status: string; n: string }>(
        `SELECT status, COUNT(*) AS n FROM orders WHERE order_id IN (${orphaned.map((row) => `'${row.order_id}'`).join(",")}) GROUP BY status`
      )
      const survivorAlive = survivor.child.exitCode === null

      // The replica comes back on its port; the client's retries for its share get through.
      const restartedAt = Date.now()
      const restarted = yield* startOrderReplica(scenario, victimUrls, { port: victim.port })
      const restartMs = Date.now() - restartedAt
      const loadOutlastedFault = !verify.postingDone()

      const { account, exitCode } = yield* verify.result
      yield* outbox.stop
      yield* report("cluster: order replica SIGKILLed", {
        ...summary(account),
        verifyExit: exitCode,
        victimLinkDelayMs: LINK_DELAY_MS,
        leftAtKill: left.length,
        claimedAtKill: left.filter((row) => row.claimed_by !== null).length,
        orphaned: orphaned.length,
        orphanOwners: orphanOwners.size,
        takeoverAfterLeaseMs: { min: Math.min(...takeover), max: Math.max(...takeover) },
        orphansRelayedAfterKillMs: { min: Math.min(...relayedAfterKill), max: Math.max(...relayedAfterKill) },
        othersRelayedAfterKillMs: Math.max(0, ...left.filter((row) => !orphaned.includes(row)).map((row) => goneAt.get(row.order_id)! - killedAt)),
        orphanStatus: Object.fromEntries(orphanStatus.map(({ n, status }) => [status, Number(n)])),
        replicaRestartMs: restartMs,
        ...outbox.figures(killedAt),
        repeatedSends: repeatedSends(system.notifiers),
        loadOutlastedFault
      })

      // The fault happened under load, and cost no order.
      expectEveryOrderNotified({ account, exitCode }, ORDERS, loadOutlastedFault)
      // The dead replica left claimed commands, all of one owner, and the survivor took them within
      // seconds of their claim lapsing (its poll runs every second).
      expect(orphaned.length).toBeGreaterThan(0)
      expect(orphanOwners.size).toBe(1)
      expect(Math.max(...takeover)).toBeLessThan(3_000)
      expect(Math.max(...relayedAfterKill)).toBeLessThan(LEASE_MS + 3_000)
      expect(survivorAlive).toBe(true)
      expect(orphanStatus.every(({ status }) => status === "queued" || status === "notified")).toBe(true)
      expect(restarted.child.exitCode).toBe(null)
    }))
})
