import { describe, expect, it } from "@effect/vitest"
import { Effect } from "effect"
import { report, until } from "../support/faultRig"
import { nodeNamed } from "../support/privateCluster"
import { killNode, startNode } from "../support/rabbitNode"
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

const RATE = 40
/** Enough orders for the load to outlast the kill, the two-node stretch and the restart, with room. */
const ORDERS = RATE * 65

describe("the node leading the command queue is SIGKILLed under load", () => {
  it.scopedLive("every accepted order is notified, nobody is refused, and the node's restart changes nothing", () =>
    Effect.gen(function*() {
      const scenario = yield* clusterScenario("leader-kill")
      const system = yield* startSystem(scenario, { ordersFirst: true })
      const outbox = yield* sampleOutbox(scenario)
      const leaderName = yield* until(leaderNow(scenario.queue), (leader) => leader !== undefined, { what: "the command queue's leader" })
        .pipe(Effect.zipRight(leaderNow(scenario.queue)))
      const leader = nodeNamed(leaderName!)
      const verify = yield* startVerify({
        urls: system.orders.map(orderUrl),
        orders: ORDERS,
        rate: RATE,
        concurrency: 100,
        waitSeconds: 90
      })
      yield* until(Effect.sync(() => sendsSince(system.notifiers, verify.startedAt)), (n) => n >= 5 * RATE, {
        timeoutMs: 60_000,
        what: "the load to flow through to the notification services"
      })

      const killedAt = Date.now()
      yield* Effect.promise(() => killNode(leader))
      const lostSinceKill = (service: (typeof system.named)[number]["service"]) => failovers(service).filter((f) => f.lostAt >= killedAt)
      yield* until(Effect.sync(() => system.named.some(({ service }) => lostSinceKill(service).length > 0)), (lost) => lost, {
        timeoutMs: 15_000,
        what: "a service to lose its connection to the killed node"
      })
      const newLeader = yield* until(leaderNow(scenario.queue, [leader.name]), (now) => now !== undefined && now !== leader.name, {
        timeoutMs: 60_000,
        what: "a new leader for the command queue"
      }).pipe(Effect.zipRight(leaderNow(scenario.queue, [leader.name])))
      // Every process that was on the dead node is connected again, to another one.
      const reconnected = () => system.named.every(({ service }) => lostSinceKill(service).every((f) => f.reconnectMs !== undefined))
      yield* until(Effect.sync(reconnected), (done) => done, { timeoutMs: 30_000, what: "every service back on a surviving node" })
      const onDeadNode = system.named.filter(({ service }) => lostSinceKill(service).length > 0)
      // The two surviving nodes carry the load: new sends, well after the kill.
      const twoNodeProgress = yield* until(Effect.sync(() => sendsSince(system.notifiers, killedAt + 5_000)), (n) => n >= 2 * RATE, {
        timeoutMs: 60_000,
        what: "sends on the two surviving nodes"
      })

      const restartAt = Date.now()
      yield* Effect.promise(() => startNode(leader))
      yield* backInCluster(leader)
      const rejoinedAt = Date.now()
      yield* until(Effect.sync(() => sendsSince(system.notifiers, rejoinedAt)), (n) => n >= RATE, {
        timeoutMs: 60_000,
        what: "sends after the node's return"
      })
      const faultOverAt = Date.now()
      const loadOutlastedFault = !verify.postingDone()

      const { account, exitCode } = yield* verify.result
      yield* outbox.stop
      const relay = yield* relayGap(scenario, killedAt, faultOverAt)
      yield* report("cluster: command queue leader SIGKILLed", {
        ...summary(account),
        verifyExit: exitCode,
        killed: leader.name,
        newLeader,
        onDeadNode: onDeadNode.map(({ name }) => name),
        failovers: failoverFigures(system),
        relayRefusals: Object.fromEntries(system.orders.map((service, i) => [`order-${i + 1}`, warningsSince(service, RELAY_REFUSED, killedAt)])),
        eventRefusals: Object.fromEntries(system.notifiers.map((service, i) => [`notification-${i + 1}`, warningsSince(service, EVENT_REFUSED, killedAt)])),
        ...outbox.figures(killedAt),
        ...relay,
        twoNodeProgressMs: twoNodeProgress,
        restartMs: rejoinedAt - restartAt,
        killToRejoinMs: rejoinedAt - killedAt,
        repeatedSends: repeatedSends(system.notifiers),
        loadOutlastedFault
      })

      // The fault happened under load, and cost no order.
      expectEveryOrderNotified({ account, exitCode }, ORDERS, loadOutlastedFault)
      // An order replica was on the killed node (the leader is where the queue was declared): its
      // relay had to carry on through a surviving node.
      expect(onDeadNode.map(({ name }) => name).some((name) => name.startsWith("order-"))).toBe(true)
      // Nobody was restarted.
      expect(system.named.map(({ service }) => service.child.exitCode)).toEqual([null, null, null, null])
    }))
})
