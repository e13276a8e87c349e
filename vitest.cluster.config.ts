import { defineConfig } from "vitest/config"

// The scale-out suite: two replicas of each service against a private three-node RabbitMQ cluster
// (test/support/privateCluster.ts, started by test/cluster/globalSetup.ts) and a PostgreSQL schema
// per scenario; the tests kill, stop and cut off the cluster's nodes and an order replica under a
// steady load. One file at a time, one test at a time, with room in every timeout for node restarts
// on a slow machine.
export default defineConfig({
  test: {
    include: ["test/cluster/**/*.test.ts"],
    globalSetup: ["test/cluster/globalSetup.ts"],
    fileParallelism: false,
    sequence: { concurrent: false },
    testTimeout: 300_000,
    hookTimeout: 300_000,
    teardownTimeout: 120_000
  }
})
