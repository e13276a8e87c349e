import { prepareNode, rabbitmqctlOn, rabbitNode, removeLeftoverDirectories, removeNode, startNode } from "./rabbitNode"

/**
 * A RabbitMQ node of the fault suite's own. The suite stops, restarts and cuts off its broker; doing
 * that to the shared broker on 5672 would break every other test and benchmark running beside it, so
 * it starts a private node (test/support/rabbitNode.ts) on another port and breaks that one.
 */
export const FAULT_BROKER = rabbitNode("fault", "fault", Number(process.env.FAULT_RABBITMQ_PORT ?? 5673))
export const FAULT_NODE = FAULT_BROKER.name
export const FAULT_AMQP_URL = FAULT_BROKER.amqpUrl

/** `rabbitmqctl -n <fault node> ...args`, failing with the tool's own output. */
export const rabbitmqctl = (...args: ReadonlyArray<string>): Promise<string> => rabbitmqctlOn(FAULT_BROKER, ...args)

/**
 * Starts the private node in a fresh directory (stopping one a previous run left behind) and
 * returns its teardown: stop the node, remove the directory.
 */
export const startPrivateBroker = async (): Promise<() => Promise<void>> => {
  await removeNode(FAULT_BROKER)
  removeLeftoverDirectories("fault")
  const teardown = () => removeNode(FAULT_BROKER)
  try {
    await prepareNode(FAULT_BROKER)
    await startNode(FAULT_BROKER)
  } catch (error) {
    await teardown()
    throw error
  }
  return teardown
}

/** Vitest global setup for the fault suite: the private node lives for the whole run. */
export default async function setup() {
  return startPrivateBroker()
}
