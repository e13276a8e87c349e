import { HttpClient, HttpClientRequest, HttpClientResponse } from "@effect/platform"
import type { ResponseError } from "@effect/platform/HttpClientError"
import { Array as Arr, Clock, Duration, Effect, Option, type ParseResult, type Redacted, Ref, Schedule, Schema } from "effect"
import { OrderStatus } from "../order/store/OrderRecord"

/**
 * A workload against a running deployment, over its public HTTP API only: post orders spread over
 * the order-service URLs, then follow each accepted order until it has finished (`notified` or
 * `failed`), and account for every one. What the store says is the truth the account is made of;
 * nothing here looks at the broker.
 */
export interface WorkloadOptions {
  /** The order services' base URLs, e.g. `http://localhost:3000`; orders go to them in turn. */
  readonly urls: ReadonlyArray<string>
  readonly orders: number
  /** POSTs in flight at once. */
  readonly concurrency: number
  /** Orders started per second, spread evenly; unset: as fast as `concurrency` allows. */
  readonly ratePerSecond: Option.Option<number>
  /** How long, after the last POST, every accepted order has to finish. */
  readonly wait: Duration.Duration
  /** The deployment's `ORDER_API_TOKEN`, sent as a bearer token with every request; none: no header. */
  readonly token: Option.Option<Redacted.Redacted<string>>
  /** Told how far the wait has come, every couple of seconds. */
  readonly progress: (line: string) => Effect.Effect<void>
}

/** What became of the orders, from the store's own answers. */
export interface Account {
  /** Answered 201. */
  readonly accepted: number
  /** Answered with a 4xx, or never answered 201 within the retries (nothing to follow). */
  readonly refused: number
  readonly notified: number
  readonly failed: number
  /** Accepted and still neither notified nor failed when the wait ran out. */
  readonly pending: number
  /** Accepted, and then unknown to the store (404). */
  readonly unknown: number
  /** `pending` + `unknown`: accepted orders the deployment did not finish. */
  readonly lost: number
  /** Orders notified more than once (`notifications` > 1). */
  readonly duplicated: number
  /** Commit to notification, for the notified orders, in milliseconds. */
  readonly notifiedAfterMillis: { readonly p50: number; readonly p99: number; readonly max: number }
  readonly lostIds: ReadonlyArray<string>
  readonly duplicatedIds: ReadonlyArray<string>
  readonly refusals: ReadonlyArray<string>
}

const OrderAnswer = Schema.Struct({
  orderId: Schema.String,
  status: OrderStatus,
  notifications: Schema.Number,
  createdAt: Schema.DateFromString,
  notifiedAt: Schema.optional(Schema.DateFromString)
})
type OrderAnswer = typeof OrderAnswer.Type

// Only what the contract promises in every 201: the order's id.
const Created = Schema.Struct({ order: Schema.Struct({ orderId: Schema.String }) })

type PostResult = { readonly accepted: string; readonly index: number } | { readonly refused: string }

/** A request that did not get an answer to act on: the network, or the service saying "later". */
class TryAgain extends Schema.TaggedError<TryAgain>()("TryAgain", { reason: Schema.String }) {
  override get message() {
    return this.reason
  }
}

const FINISHED: ReadonlyArray<string> = ["notified", "failed"]

/** Retrying a POST is safe: each order has its own `Idempotency-Key`, so a retry never makes a second order. */
const retryPost = Schedule.exponential("100 millis").pipe(
  Schedule.union(Schedule.spaced("2 seconds")),
  Schedule.upTo("60 seconds")
)

const ANSWER_TIMEOUT = Duration.seconds(10)

const percentile = (sorted: ReadonlyArray<number>, p: number) =>
  sorted.length === 0 ? 0 : sorted[Math.min(sorted.length - 1, Math.ceil((p / 100) * sorted.length) - 1)]!

export const runWorkload = (options: WorkloadOptions) =>
  Effect.gen(function*() {
    const untraced = (yield* HttpClient.HttpClient).pipe(HttpClient.withTracerPropagation(false))
    const client = Option.match(options.token, {
      onNone: () => untraced,
      onSome: (token) => HttpClient.mapRequest(untraced, HttpClientRequest.bearerToken(token))
    })
    const runId = `verify-${(yield* Clock.currentTimeMillis).toString(36)}-${Math.random().toString(36).slice(2, 8)}`
    const urlFor = (index: number) => options.urls[index % options.urls.length]!

    const answered = (request: HttpClientRequest.HttpClientRequest) =>
      client.execute(request).pipe(
        Effect.timeoutFail({ duration: ANSWER_TIMEOUT, onTimeout: () => new TryAgain({ reason: "no answer in time" }) }),
        Effect.catchTag("RequestError", (error) => Effect.fail(new TryAgain({ reason: error.message }))),
        Effect.flatMap((response) =>
          response.status >= 500
            ? Effect.zipRight(response.text.pipe(Effect.ignore), Effect.fail(new TryAgain({ reason: `HTTP ${response.status}` })))
            : Effect.succeed(response)
        )
      )

    /** One order: its 201 (the accepted order), or why not. */
    const post = (index: number): Effect.Effect<PostResult> => {
      const request = HttpClientRequest.post(`${urlFor(index)}/orders`).pipe(
        HttpClientRequest.setHeader("Idempotency-Key", `${runId}-${index}`),
        HttpClientRequest.bodyUnsafeJson({ userId: 1 + (index % 1000) })
      )
      return answered(request).pipe(
        Effect.retry({ schedule: retryPost, while: (error) => error._tag === "TryAgain" }),
        Effect.flatMap((response): Effect.Effect<PostResult, TryAgain | ResponseError | ParseResult.ParseError> =>
          response.status === 201
            ? Effect.map(HttpClientResponse.schemaBodyJson(Created)(response), ({ order }) => ({ accepted: order.orderId, index }))
            : Effect.map(response.text, (body) => ({ refused: `HTTP ${response.status} ${body.slice(0, 200)}` }))
        ),
        Effect.catchAll((error) => Effect.succeed({ refused: `never answered 201 (${error.message})` }))
      )
    }

    /** The order as the store has it now: from the service that took it, else from any other. */
    const look = (orderId: string, index: number) =>
      Effect.firstSuccessOf(options.urls.map((_, offset) =>
        answered(HttpClientRequest.get(`${urlFor(index + offset)}/orders/${orderId}`)).pipe(
          Effect.flatMap((response): Effect.Effect<OrderAnswer | "unknown", TryAgain | ResponseError | ParseResult.ParseError> =>
            response.status === 404
              ? Effect.zipRight(response.text.pipe(Effect.ignore), Effect.succeed("unknown" as const))
              : HttpClientResponse.schemaBodyJson(OrderAnswer)(response)
          )
        )
      )).pipe(Effect.option)

    // Post, at the rate asked for if any.
    const spacing = Option.map(options.ratePerSecond, (rate) => Duration.millis(1000 / rate))
    const startedAt = yield* Clock.currentTimeMillis
    const posts = yield* Effect.forEach(
      Arr.range(0, options.orders - 1),
      (index) =>
        Option.match(spacing, {
          onNone: () => post(index),
          onSome: (gap) =>
            Effect.flatMap(Clock.currentTimeMillis, (now) =>
              Effect.zipRight(Effect.sleep(Duration.millis(Math.max(0, startedAt + index * Duration.toMillis(gap) - now))), post(index)))
        }),
      { concurrency: options.concurrency }
    )
    const accepted = posts.flatMap((result) => ("accepted" in result ? [result] : []))
    const refusals = posts.flatMap((result) => ("refused" in result ? [result.refused] : []))

    // Follow every accepted order until it has finished, or the wait runs out.
    const latest = yield* Ref.make(new Map<string, OrderAnswer | "unknown">())
    const unfinished = (known: Map<string, OrderAnswer | "unknown">) =>
      accepted.filter(({ accepted: id }) => {
        const answer = known.get(id)
        return answer === undefined || answer === "unknown" || !FINISHED.includes(answer.status)
      })
    const deadline = (yield* Clock.currentTimeMillis) + Duration.toMillis(options.wait)
    let lastProgress = 0
    for (;;) {
      const waiting = unfinished(yield* Ref.get(latest))
      const now = yield* Clock.currentTimeMillis
      if (waiting.length === 0 || now > deadline) break
      if (now - lastProgress >= 2000) {
        lastProgress = now
        const known = [...(yield* Ref.get(latest)).values()].filter((answer) => answer !== "unknown")
        const count = (status: string) => known.filter((answer) => answer.status === status).length
        yield* options.progress(
          `waiting for ${waiting.length} of ${accepted.length} accepted orders to finish: ` +
            `${count("notified")} notified, ${count("failed")} failed (${Math.ceil((deadline - now) / 1000)} s left)`
        )
      }
      yield* Effect.forEach(waiting, ({ accepted: id, index }) =>
        Effect.flatMap(look(id, index), Option.match({
          onNone: () => Effect.void,
          onSome: (answer) => Ref.update(latest, (known) => known.set(id, answer))
        })), { concurrency: 20, discard: true })
      if (unfinished(yield* Ref.get(latest)).length > 0) yield* Effect.sleep("500 millis")
    }

    const known = yield* Ref.get(latest)
    const answers = accepted.map(({ accepted: id }) => ({ id, answer: known.get(id) }))
    const stored = answers.flatMap(({ answer, id }) => (answer !== undefined && answer !== "unknown" ? [{ id, answer }] : []))
    const unknownIds = answers.flatMap(({ answer, id }) => (answer === "unknown" ? [id] : []))
    const pendingIds = answers.flatMap(({ answer, id }) =>
      answer === undefined || (answer !== "unknown" && !FINISHED.includes(answer.status)) ? [id] : [])
    const notified = stored.filter(({ answer }) => answer.status === "notified")
    const latencies = notified
      .flatMap(({ answer }) => (answer.notifiedAt === undefined ? [] : [answer.notifiedAt.getTime() - answer.createdAt.getTime()]))
      .sort((a, b) => a - b)
    const duplicatedIds = stored.filter(({ answer }) => answer.notifications > 1).map(({ id }) => id)
    return {
      accepted: accepted.length,
      refused: refusals.length,
      notified: notified.length,
      failed: stored.filter(({ answer }) => answer.status === "failed").length,
      pending: pendingIds.length,
      unknown: unknownIds.length,
      lost: pendingIds.length + unknownIds.length,
      duplicated: duplicatedIds.length,
      notifiedAfterMillis: { p50: percentile(latencies, 50), p99: percentile(latencies, 99), max: latencies.at(-1) ?? 0 },
      lostIds: [...unknownIds, ...pendingIds],
      duplicatedIds,
      refusals
    } satisfies Account
  })
