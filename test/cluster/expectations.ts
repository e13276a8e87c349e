import { expect } from "@effect/vitest"
import type { VerifyAccount } from "./clusterRig"

// Apart from clusterRig.ts, which the global setup imports: vitest's `expect` cannot load there.
/**
 * What every scenario must end with: every order accepted (nobody refused) and notified, none
 * lost or failed, the tool's exit 0, and the fault over while the load still ran.
 */
export const expectEveryOrderNotified = (
  { account, exitCode }: { readonly account: VerifyAccount; readonly exitCode: number | null },
  orders: number,
  loadOutlastedFault: boolean
) => {
  expect(account.lost).toBe(0)
  expect(account.lostIds).toEqual([])
  expect(account.failed).toBe(0)
  expect(account.refused).toBe(0)
  expect(account.accepted).toBe(orders)
  expect(account.notified).toBe(account.accepted)
  expect(exitCode).toBe(0)
  expect(loadOutlastedFault).toBe(true)
}
