import { Command, HelpDoc, Options, ValidationError } from "@effect/cli"
import { FetchHttpClient } from "@effect/platform"
import { Console, Data, Duration, Effect } from "effect"
import { ApiTokenConfig } from "../order/OrderConfig"
import { writeLine } from "../runtime/runCli"
import { type Account, runWorkload } from "./Workload"

const urls = Options.text("url").pipe(
  Options.withDescription("an order service's base URL; repeat it (or separate with commas) for several replicas"),
  Options.repeated,
  Options.map((given) => given.flatMap((value) => value.split(",")).map((url) => url.trim().replace(/\/+$/, ""))),
  Options.mapEffect((given) => {
    const list = given.length === 0 ? ["http://localhost:3000"] : given
    const bad = list.find((url) => !/^https?:\/\/[^/\s]+(\/\S*)?$/.test(url))
    return bad === undefined ? Effect.succeed(list) : Effect.fail(invalid(`--url must be an http:// or https:// URL (got "${bad}")`))
  })
)

const positive = (name: string, fallback: number, description: string) =>
  Options.integer(name).pipe(
    Options.withDescription(description),
    Options.withDefault(fallback),
    Options.mapEffect((value) => (value >= 1 ? Effect.succeed(value) : Effect.fail(invalid(`--${name} must be a positive integer (got ${value})`))))
  )

const invalid = (line: string) => ValidationError.invalidValue(HelpDoc.p(line))

/** The run ended, and the account shows orders the deployment lost (or none accepted at all). */
export class AccountNotClean extends Data.TaggedError("AccountNotClean")<{ readonly account: Account }> {
  override get message() {
    return this.account.accepted === 0
      ? "No order was accepted: is an order service running at --url?"
      : `${this.account.lost} of ${this.account.accepted} accepted orders were lost`
  }
}

export const verifyCommand = Command.make("verify", {
  urls,
  orders: positive("orders", 100, "how many orders to post"),
  concurrency: positive("concurrency", 10, "POSTs in flight at once"),
  rate: Options.integer("rate").pipe(
    Options.withDescription("orders started per second, spread evenly (default: as fast as --concurrency allows)"),
    Options.optional
  ),
  waitSeconds: positive("wait", 120, "seconds every accepted order has, after the last POST, to be notified or failed"),
  json: Options.boolean("json").pipe(Options.withDescription("print the account as JSON on stdout"))
}, (options) =>
  Effect.flatMap(ApiTokenConfig, (token) => runWorkload({
    urls: options.urls,
    orders: options.orders,
    concurrency: options.concurrency,
    ratePerSecond: options.rate,
    wait: Duration.seconds(options.waitSeconds),
    token,
    progress: writeLine
  })).pipe(
    Effect.tap((account) => Console.log(options.json ? JSON.stringify(account, null, 2) : accountTable(account))),
    Effect.flatMap((account) =>
      account.lost > 0 || account.accepted === 0 ? Effect.fail(new AccountNotClean({ account })) : Effect.void),
    Effect.provide(FetchHttpClient.layer)
  )).pipe(Command.withDescription(
    "Drives a running deployment over HTTP: posts orders spread over the order services, waits for every " +
      "accepted order to be notified or failed, and prints what was accepted, notified, failed, lost and duplicated. " +
      "Exits 1 when an accepted order was lost (unknown to the store, or not finished within --wait). " +
      "Sends ORDER_API_TOKEN (or the file ORDER_API_TOKEN_FILE names) as a bearer token when it is set."
  ))

/** The rows of the account, aligned. */
export const accountTable = (account: Account) => {
  const rows: ReadonlyArray<[string, string]> = [
    ["accepted", String(account.accepted)],
    ["refused", String(account.refused)],
    ["notified", String(account.notified)],
    ["failed", String(account.failed)],
    ["pending", String(account.pending)],
    ["unknown", String(account.unknown)],
    ["lost", String(account.lost)],
    ["duplicated", String(account.duplicated)],
    ["notified after", `p50 ${account.notifiedAfterMillis.p50} ms, p99 ${account.notifiedAfterMillis.p99} ms, max ${account.notifiedAfterMillis.max} ms`]
  ]
  const width = Math.max(...rows.map(([name]) => name.length))
  const lines = rows.map(([name, value]) => `${name.padEnd(width)}  ${value}`)
  if (account.lostIds.length > 0) lines.push(`lost orders: ${account.lostIds.slice(0, 20).join(" ")}${account.lostIds.length > 20 ? " ..." : ""}`)
  if (account.refusals.length > 0) lines.push(`first refusal: ${account.refusals[0]}`)
  return lines.join("\n")
}
