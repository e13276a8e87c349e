import { describe, expect, it } from "@effect/vitest"
import { Effect } from "effect"
import { report, until } from "../support/faultRig"
import { CLUSTER_NODES } from "../support/privateCluster"
import {
  clusterScenario,
  EVENT_REFUSED,
  failoverFigures,
  failovers,
  HEARTBEAT_S,
  nodeUrls,
  orderUrl,
  RELAY_REFUSED,
  repeatedSends,
  sampleOutbox,
  sendsSince,
  startSystem,
  startVerify,
  summary,
  warningsSince
} from "./clusterRig"
import { expectEveryOrderNotified } from "./expectations"
import { tcpProxy } from "../support/tcpProxy"

const RATE = 40
const ORDERS = RATE * 45
/**
 * amqplib checks for incoming bytes once a heartbeat interval and gives up at the second check in a
 * row that finds none: between two and three intervals after the peer fell silent (the contract's
 * "about twice"); the bound adds room for a busy machine.
 */
const NOTICED_AFTER_MS = 2 * HEARTBEAT_S * 1000 - 250
const NOTICED_WITHIN_MS = 3 * HEARTBEAT_S * 1000 + 1_500

describe("a half-open connection between a service and one node", () => {
  it.scopedLive("the proxy stops forwarding without closing: the service notices by heartbeat and carries on through another node", () =>
    Effect.gen(function*() {
      const scenario = yield* clusterScenario("half-open")
      // One order replica and one notification service reach their first node through a proxy of the
      // test's own, listed first in their AMQP_URL.
      const orderProxy = yield* tcpProxy({ host: "127.0.0.1", port: CLUSTER_NODES[0]!.amqpPort })
      const notifierProxy = yield* tcpProxy({ host: "127.0.0.1", port: CLUSTER_NODES[2]!.amqpPort })
      const proxied: Record<number, { readonly url: string }> = { 0: orderProxy, 2: notifierProxy }
      const urlsOf = (i: number) => {
        const proxy = proxied[i]
        return proxy === undefined ? nodeUrls(i) : [proxy.url, ...nodeUrls(i).slice(1)]
      }
      const aliases = { [orderProxy.port]: "proxy→r1", [notifierProxy.port]: "proxy→r3" }
      const system = yield* startSystem(scenario, { urlsOf })
      const [order, notifier] = [system.orders[0]!, system.notifiers[0]!]
      expect(failovers(order)).toEqual([])
      expect(system.named.every(({ service }) => failovers(service).length === 0)).toBe(true)
      const outbox = yield* sampleOutbox(scenario)
      const verify = yield* startVerify({ urls: system.orders.map(orderUrl), orders: ORDERS, rate: RATE, concurrency: 100, waitSeconds: 90 })
      yield* until(Effect.sync(() => sendsSince(system.notifiers, verify.startedAt)), (n) => n >= 5 * RATE, {
        timeoutMs: 60_000,
        what: "the load to flow through to the notification services"
      })

      const stalledAt = Date.now()
      orderProxy.stall()
      notifierProxy.stall()
      const movedOn = (service: typeof order) => failovers(service, aliases).find((f) => f.lostAt >= stalledAt && f.reconnectMs !== undefined)
      for (const service of [order, notifier]) {
        yield* until(Effect.sync(() => movedOn(service)), (f) => f !== undefined, {
          timeoutMs: 30_000,
          what: "the service behind the stalled proxy to reconnect elsewhere"
        })
      }
      const [orderMove, notifierMove] = [movedOn(order)!, movedOn(notifier)!]
      // Work goes on through the other nodes: sends after both moved.
      const movedAt = Math.max(orderMove.lostAt + orderMove.reconnectMs!, notifierMove.lostAt + notifierMove.reconnectMs!)
      yield* until(Effect.sync(() => sendsSince(system.notifiers, movedAt)), (n) => n >= 2 * RATE, {
        timeoutMs: 60_000,
        what: "sends after the move"
      })
      const loadOutlastedFault = !verify.postingDone()

      const { account, exitCode } = yield* verify.result
      yield* outbox.stop
      yield* report("cluster: half-open connection", {
        ...summary(account),
        verifyExit: exitCode,
        heartbeatS: HEARTBEAT_S,
        orderNoticedMs: orderMove.lostAt - stalledAt,
        orderReconnectMs: orderMove.reconnectMs,
        orderMovedTo: orderMove.to,
        notifierNoticedMs: notifierMove.lostAt - stalledAt,
        notifierReconnectMs: notifierMove.reconnectMs,
        notifierMovedTo: notifierMove.to,
        failovers: failoverFigures(system, aliases),
        relayRefusals: warningsSince(order, RELAY_REFUSED, stalledAt),
        eventRefusals: warningsSince(notifier, EVENT_REFUSED, stalledAt),
        ...outbox.figures(stalledAt),
        repeatedSends: repeatedSends(system.notifiers),
        loadOutlastedFault
      })

      // The fault happened under load, and cost no order.
      expectEveryOrderNotified({ account, exitCode }, ORDERS, loadOutlastedFault)
      for (const move of [orderMove, notifierMove]) {
        // Noticed by the missed heartbeats (nothing closed the connection), in two to three intervals...
        expect(move.reason).toMatch(/heartbeat/i)
        expect(move.lostAt - stalledAt).toBeGreaterThanOrEqual(NOTICED_AFTER_MS)
        expect(move.lostAt - stalledAt).toBeLessThan(NOTICED_WITHIN_MS)
        // ...and back at once on a real node, the next in its list.
        expect(move.to).toMatch(/^r[123]$/)
        expect(move.reconnectMs).toBeLessThan(2_000)
      }
      expect([orderMove.to, notifierMove.to]).toEqual(["r2", "r1"])
      // The other two services were not disturbed.
      expect([system.orders[1]!, system.notifiers[1]!].map((service) => failovers(service).length)).toEqual([0, 0])
      expect(system.named.map(({ service }) => service.child.exitCode)).toEqual([null, null, null, null])
    }))
})
