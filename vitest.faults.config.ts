import { defineConfig } from "vitest/config"

// The fault-injection suite: real services as child processes against a private RabbitMQ node
// (test/support/privateBroker.ts) that the tests stop, restart and cut off. One file at a time,
// one test at a time, with room for a broker restart in every timeout.
export default defineConfig({
  test: {
    include: ["test/faults/**/*.test.ts"],
    globalSetup: ["test/support/privateBroker.ts"],
    fileParallelism: false,
    sequence: { concurrent: false },
    testTimeout: 180_000,
    hookTimeout: 180_000,
    teardownTimeout: 120_000
  }
})
