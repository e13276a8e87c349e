import { prepareNode, rabbitCli, rabbitmqctlOn, type RabbitNode, rabbitNode, removeLeftoverDirectories, removeNode, startNode } from "./rabbitNode"

/**
 * A RabbitMQ cluster of the scale-out scenarios' own: three private nodes (test/support/rabbitNode.ts)
 * joined into one cluster. The scenarios kill and restart its nodes; the broker on 5672 and the
 * fault suite's node are never touched.
 */
const BASE_PORT = Number(process.env.CLUSTER_RABBITMQ_BASE_PORT ?? 5681)
const SUITE = "cluster"

export const CLUSTER_NODES: ReadonlyArray<RabbitNode> = [1, 2, 3].map((index) => rabbitNode(SUITE, `r${index}`, BASE_PORT + index - 1))

export const nodeNamed = (name: string): RabbitNode => {
  const node = CLUSTER_NODES.find((node) => node.name === name)
  if (node === undefined) throw new Error(`${name} is not a node of the private cluster`)
  return node
}

/** The node that leads the quorum queue `queue` now, as `via` sees it; undefined while it has none. */
export const leaderOf = async (via: RabbitNode, queue: string): Promise<string | undefined> => {
  const output = await rabbitmqctlOn(via, "list_queues", "--no-table-headers", "name", "leader")
  return output.split("\n").map((line) => line.trim().split(/\s+/)).find(([name]) => name === queue)?.[1]
}

/** The nodes `via` counts as running members of its cluster. */
export const runningNodes = async (via: RabbitNode): Promise<ReadonlyArray<string>> => {
  const output = await rabbitmqctlOn(via, "eval", "rabbit_nodes:all_running().")
  return [...output.matchAll(/[\w.-]+@[\w.-]+/g)].map(([name]) => name).sort()
}

/**
 * Whether stopping `node` now would leave a quorum queue without a majority (`rabbitmq-queues
 * check_if_node_is_quorum_critical`): in a rolling restart, the next node may go only once this is
 * false, i.e. the node restarted last has caught up on every queue.
 */
export const quorumCritical = (node: RabbitNode) =>
  rabbitCli("rabbitmq-queues", node.name, ["check_if_node_is_quorum_critical"]).then(() => false, () => true)

/** The names of the queues in the cluster, as `via` lists them. */
export const queueNames = async (via: RabbitNode): Promise<ReadonlyArray<string>> =>
  (await rabbitmqctlOn(via, "list_queues", "--no-table-headers", "name")).split("\n").map((name) => name.trim()).filter((name) => name !== "")

/** Stops every node and removes their directories (and what a killed run left). Never fails. */
const removeCluster = async () => {
  await Promise.all(CLUSTER_NODES.map(removeNode))
  removeLeftoverDirectories(SUITE)
}

/**
 * Starts three fresh nodes (stopping and removing what a killed run left) and joins the second and
 * third to the first. Returns the teardown: stop every node, remove the directories.
 */
export const startPrivateCluster = async (): Promise<() => Promise<void>> => {
  await removeCluster()
  try {
    for (const node of CLUSTER_NODES) await prepareNode(node)
    await Promise.all(CLUSTER_NODES.map(startNode))
    const [first, ...others] = CLUSTER_NODES
    for (const node of others) {
      await rabbitmqctlOn(node, "stop_app")
      await rabbitmqctlOn(node, "join_cluster", first!.name)
      await rabbitmqctlOn(node, "start_app")
    }
    await rabbitmqctlOn(first!, "await_online_nodes", "3", "--timeout", "120")
    const running = await runningNodes(first!)
    if (running.join(" ") !== CLUSTER_NODES.map((node) => node.name).sort().join(" ")) {
      throw new Error(`The cluster formed with ${running.join(", ") || "no node"} running, not all three`)
    }
  } catch (error) {
    await removeCluster()
    throw error
  }
  return removeCluster
}
