import { describe, expect, it } from "@effect/vitest"
import { Effect } from "effect"
import { report, until } from "../support/faultRig"
import { CLUSTER_NODES, quorumCritical } from "../support/privateCluster"
import { startNode, stopNode } from "../support/rabbitNode"
import {
  backInCluster,
  clusterScenario,
  EVENT_REFUSED,
  failoverFigures,
  failovers,
  leaderNow,
  orderUrl,
  relayGap,
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

const RATE = 30
/** Enough orders for the load to outlast three stops and starts, with room. */
const ORDERS = RATE * 90

describe("a rolling restart of the cluster under load", () => {
  it.scopedLive("each node stopped and started in turn: every accepted order is notified, nobody is refused", () =>
    Effect.gen(function*() {
      const scenario = yield* clusterScenario("rolling")
      const system = yield* startSystem(scenario)
      const outbox = yield* sampleOutbox(scenario)
      const verify = yield* startVerify({ urls: system.orders.map(orderUrl), orders: ORDERS, rate: RATE, concurrency: 100, waitSeconds: 90 })
      yield* until(Effect.sync(() => sendsSince(system.notifiers, verify.startedAt)), (n) => n >= 5 * RATE, {
        timeoutMs: 60_000,
        what: "the load to flow through to the notification services"
      })

      const startedAt = Date.now()
      const steps: Array<Record<string, unknown>> = []
      for (const node of CLUSTER_NODES) {
        // Only once the node restarted last has caught up: stopping this one must leave every
        // quorum queue a majority.
        const waitedMs = yield* until(Effect.promise(() => quorumCritical(node)), (critical) => !critical, {
          timeoutMs: 60_000,
          what: `${node.name} to be safe to stop (no quorum queue critical on it)`
        })
        const leaderBefore = yield* leaderNow(scenario.queue)
        const stoppingAt = Date.now()
        yield* Effect.promise(() => stopNode(node))
        const stoppedAt = Date.now()
        yield* Effect.promise(() => startNode(node))
        const rejoinMs = yield* backInCluster(node)
        const backAt = Date.now()
        // The cluster carries on: sends after the node's return.
        yield* until(Effect.sync(() => sendsSince(system.notifiers, backAt)), (n) => n >= RATE, {
          timeoutMs: 60_000,
          what: `sends after ${node.name} came back`
        })
        steps.push({
          node: node.name,
          leaderBefore,
          leaderAfter: yield* leaderNow(scenario.queue),
          waitedToStopMs: waitedMs,
          stopMs: stoppedAt - stoppingAt,
          downMs: backAt - stoppedAt + rejoinMs,
          clientsMoved: system.named.filter(({ service }) => failovers(service).some((f) => f.lostAt >= stoppingAt && f.lostAt <= backAt)).map(({ name }) => name)
        })
      }
      const faultOverAt = Date.now()
      const loadOutlastedFault = !verify.postingDone()

      const { account, exitCode } = yield* verify.result
      yield* outbox.stop
      yield* report("cluster: rolling restart", {
        ...summary(account),
        verifyExit: exitCode,
        steps,
        rollingRestartMs: faultOverAt - startedAt,
        failovers: failoverFigures(system),
        relayRefusals: Object.fromEntries(system.orders.map((service, i) => [`order-${i + 1}`, warningsSince(service, RELAY_REFUSED, startedAt)])),
        eventRefusals: Object.fromEntries(system.notifiers.map((service, i) => [`notification-${i + 1}`, warningsSince(service, EVENT_REFUSED, startedAt)])),
        ...outbox.figures(startedAt),
        ...(yield* relayGap(scenario, startedAt, faultOverAt)),
        repeatedSends: repeatedSends(system.notifiers),
        loadOutlastedFault
      })

      // The fault happened under load, and cost no order.
      expectEveryOrderNotified({ account, exitCode }, ORDERS, loadOutlastedFault)
      // Every process lost a connection at some point (each one's first node was stopped) and came back.
      for (const { service } of system.named) {
        const moves = failovers(service).filter((f) => f.lostAt >= startedAt)
        expect(moves.length).toBeGreaterThan(0)
        expect(moves.every((f) => f.reconnectMs !== undefined)).toBe(true)
      }
      expect(system.named.map(({ service }) => service.child.exitCode)).toEqual([null, null, null, null])
    }))
})
