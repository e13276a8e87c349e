import { defineConfig } from "vitest/config"

// Unit and integration tests. The fault-injection suite (test/faults) stops and cuts off a broker,
// so it runs on its own afterwards, with vitest.faults.config.ts.
export default defineConfig({
  test: {
    include: ["test/unit/**/*.test.ts", "test/integration/**/*.test.ts"],
    globalSetup: ["test/support/requireBroker.ts"],
    testTimeout: 30_000,
    hookTimeout: 30_000
  }
})
