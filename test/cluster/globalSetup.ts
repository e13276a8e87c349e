import { startPrivateCluster } from "../support/privateCluster"
import { dropScenarioSchemas } from "./clusterRig"

/**
 * Vitest global setup for the cluster suite: the private cluster lives for the whole run. Schemas
 * a killed run left behind go first; the teardown stops the cluster and says if a scenario left one.
 */
export default async function setup() {
  await dropScenarioSchemas()
  const started = Date.now()
  const teardown = await startPrivateCluster()
  console.log(`[cluster] r1, r2, r3@localhost running and joined in ${Date.now() - started} ms`)
  return async () => {
    await teardown()
    const left = await dropScenarioSchemas()
    if (left.length > 0) throw new Error(`Scenario schemas left behind (now dropped): ${left.join(", ")}`)
  }
}
