import * as amqp from "amqplib"
import {
  Cause,
  Context,
  Data,
  Deferred,
  Duration,
  Effect,
  Exit,
  Layer,
  Option,
  Redacted,
  Schedule,
  type Scope,
  Stream,
  SubscriptionRef
} from "effect"
import type { ConnectionOptions } from "node:tls"
import type { AmqpTls } from "../config/AmqpTls"
import { redactUrl, SharedConfig } from "../config/SharedConfig"
import { atMost } from "../runtime/atMost"
import { backoff } from "../runtime/backoff"
import { describeCause, errorMessage } from "../runtime/describe"
import { writeFramesInBatches } from "./amqplibFrameBatching"

export class BrokerUnreachable extends Data.TaggedError("BrokerUnreachable")<{
  readonly url: string
  readonly reason: string
}> {
  override get message() {
    return `Broker not reachable at ${this.url} (${this.reason}); retrying with backoff`
  }
}

/** `AMQP_HEARTBEAT_S`'s default, for a client that does not read the services' configuration. */
const DEFAULT_HEARTBEAT_SECONDS = 10

/** How long one connection attempt, or closing a channel or connection, may take. */
const BROKER_OPERATION_TIMEOUT = Duration.seconds(5)

/**
 * Reconnection backoff: 100 ms doubling, jittered, capped at 2 s so that a service is back within
 * about two seconds of the broker's return.
 */
const reconnectSchedule = backoff("2 seconds")

/** Session restarts on a live connection (a channel closed by the broker, a queue mismatch). */
const sessionRestartSchedule = Schedule.exponential("200 millis").pipe(
  Schedule.union(Schedule.spaced("5 seconds")),
  Schedule.resetAfter("1 minute")
)

/**
 * The broker connection, kept open for the life of the service.
 *
 * We do not use amqplib's opt-in recovery (`connect(url, { recovery })`): it reconnects to one URL
 * only, while `AMQP_URL` may list several cluster nodes to try in turn; and its channel calls wait
 * indefinitely while disconnected, whereas the publisher must refuse at once. Instead, a fiber keeps
 * one connection at a time in `state`, and `withEveryConnection` runs a session (channels, topology,
 * consumers) on each connection, in a scope that closes when the session ends.
 */
export class AmqpConnection extends Context.Tag("messaging/AmqpConnection")<AmqpConnection, {
  /** The open connection, or None while (re)connecting. */
  readonly state: SubscriptionRef.SubscriptionRef<Option.Option<amqp.ChannelModel>>
  /**
   * Why the broker has blocked publishing on this connection (a memory or disk alarm), if it has.
   * A plain read, not an Effect: the publisher checks it synchronously before every publish.
   */
  readonly blockedBy: () => string | undefined
  /**
   * Runs `session` on every connection, one at a time, until the surrounding fiber is interrupted.
   * A session that ends or fails while its connection lives is started again with backoff. When the
   * connection is lost, the session ends by itself (its channel closes with the connection), and
   * the next one starts on the next connection.
   */
  readonly withEveryConnection: <E, R>(
    session: (connection: amqp.ChannelModel) => Effect.Effect<void, E, R>
  ) => Effect.Effect<never, never, Exclude<R, Scope.Scope>>
}>() {
  /** `connectionName` shows in the management UI and `rabbitmqctl list_connections`. */
  static readonly layer = (options: { readonly connectionName: string }) =>
    Layer.scoped(AmqpConnection, make(options.connectionName))
}

/**
 * The URL with `heartbeat` asked for, unless it asks for one itself. amqplib takes the heartbeat
 * only from the URL's query, and without one accepts the broker's (60 s on RabbitMQ), so a peer
 * that stops answering would go unnoticed for two minutes.
 */
const withHeartbeat = (url: string, heartbeatSeconds: number) => {
  const parsed = new URL(url)
  if (!parsed.searchParams.has("heartbeat")) parsed.searchParams.set("heartbeat", String(heartbeatSeconds))
  return parsed.toString()
}

/**
 * The TLS socket options for an `amqps://` URL (amqplib opens `amqp://` ones with `net.connect`, which
 * has none). amqplib sets `servername` to the URL's host name itself (not to an IP address, as RFC 6066
 * says), and Node checks the certificate against that name or address.
 */
const tlsOptions = (url: string, tls: AmqpTls | undefined): Pick<ConnectionOptions, "rejectUnauthorized" | "ca" | "cert" | "key"> =>
  new URL(url).protocol !== "amqps:" ? {} : {
    // Node's default, stated so that NODE_TLS_REJECT_UNAUTHORIZED=0 cannot turn verification off.
    rejectUnauthorized: true,
    ...(tls !== undefined && Option.isSome(tls.ca) ? { ca: tls.ca.value } : {}),
    ...(tls !== undefined && Option.isSome(tls.client)
      ? { cert: tls.client.value.cert, key: Redacted.value(tls.client.value.key) }
      : {})
  }

/**
 * One attempt to open a connection to `url`, as every client of ours opens it (the services, and
 * the `dlq` tool); `connectionName` shows in the management UI and `rabbitmqctl list_connections`.
 * A missed heartbeat closes the connection like any other loss. An `amqps://` URL is TLS or nothing.
 */
export const connectTo = (
  url: Redacted.Redacted<string>,
  connectionName: string,
  options: { readonly heartbeatSeconds?: number; readonly tls?: AmqpTls } = {}
) =>
  Effect.tryPromise({
    try: () =>
      amqp.connect(withHeartbeat(Redacted.value(url), options.heartbeatSeconds ?? DEFAULT_HEARTBEAT_SECONDS), {
        // amqplib leaves Nagle on, which can hold small publishes and acks back ~40 ms.
        noDelay: true,
        timeout: Duration.toMillis(BROKER_OPERATION_TIMEOUT),
        clientProperties: { connection_name: connectionName },
        ...tlsOptions(Redacted.value(url), options.tls)
      }),
    catch: (cause) => new BrokerUnreachable({ url: redactUrl(url), reason: errorMessage(cause) })
  }).pipe(Effect.map(writeFramesInBatches))

/** No URL of AMQP_URL answered. A tool tries each once: an operator wants to know now, not after backoff. */
export class NoBrokerReachable extends Data.TaggedError("NoBrokerReachable")<{
  readonly attempts: ReadonlyArray<BrokerUnreachable>
}> {
  override get message() {
    return `Broker not reachable at ${this.attempts.map(({ reason, url }) => `${url} (${reason})`).join(", ")}`
  }
}

/** A tool's connection (the `dlq` and `topology` tools), for the life of the scope: each URL of AMQP_URL tried once, in turn. */
export const connectOnce = (connectionName: string) =>
  Effect.gen(function*() {
    const { amqpTls, amqpUrls } = yield* SharedConfig
    return yield* Effect.acquireRelease(
      Effect.validateFirst(amqpUrls, (url) => connectTo(url, connectionName, { tls: amqpTls })).pipe(
        Effect.mapError((attempts) => new NoBrokerReachable({ attempts })),
        // Without a listener, an 'error' event (the broker going away) would be thrown.
        Effect.tap((connection) => Effect.sync(() => connection.on("error", () => undefined)))
      ),
      closeQuietly
    )
  })

/** Closes an amqplib connection or channel, ignoring one that is already gone. */
export const closeQuietly = (resource: { close(): Promise<void> }) =>
  Effect.promise(() => resource.close().catch(() => undefined)).pipe(atMost(BROKER_OPERATION_TIMEOUT))

/**
 * Opens a channel, or fails if the connection closes first: amqplib leaves a channel request on a
 * closing connection unanswered, and a session that waited on it would never end.
 */
export const openChannel = <C extends amqp.Channel>(connection: amqp.ChannelModel, open: () => Promise<C>) =>
  Effect.async<C, Error>((resume) => {
    const onClose = () => resume(Effect.fail(new Error("The connection closed while opening a channel")))
    connection.once("close", onClose)
    open().then(
      (channel) => {
        connection.off("close", onClose)
        resume(Effect.succeed(channel))
      },
      (error: Error) => {
        connection.off("close", onClose)
        resume(Effect.fail(error))
      }
    )
  })

const make = (connectionName: string) =>
  Effect.gen(function*() {
    const { amqpTls, amqpUrls, heartbeatSeconds } = yield* SharedConfig
    const state = yield* SubscriptionRef.make(Option.none<amqp.ChannelModel>())
    let blockedBy: string | undefined
    let nextNode = 0

    const connectToNextNode = Effect.suspend(() => {
      const url = amqpUrls[nextNode++ % amqpUrls.length]!
      return Effect.map(
        connectTo(url, connectionName, { heartbeatSeconds, tls: amqpTls }),
        (connection) => ({ connection, url: redactUrl(url) })
      )
    })

    // Each attempt is acquired on its own: an acquisition cannot be interrupted, and a shutdown
    // while the broker is away must not wait for the whole backoff, only for one attempt.
    const connectWithBackoff = Effect.acquireRelease(connectToNextNode, ({ connection }) =>
      Effect.zipRight(SubscriptionRef.set(state, Option.none()), closeQuietly(connection))).pipe(
        Effect.tapError((error) => Effect.logWarning(error.message)),
        Effect.retry(reconnectSchedule)
      )

    // Connections that have closed, marked synchronously on 'close', before `state` catches up. A
    // session must not be restarted on one: amqplib never settles a channel opened there, and a
    // session opens its channel uninterruptibly, so it would hang there and keep every later
    // connection without a session.
    const lost = new WeakSet<amqp.ChannelModel>()

    // One connection, from opening to loss. Scoped: interrupting it (shutdown) closes the connection.
    const connectionLifetime = Effect.gen(function*() {
      const { connection, url } = yield* connectWithBackoff
      const closed = yield* Deferred.make<string>()
      // 'error' always precedes 'close'; without a listener it would be thrown.
      connection.on("error", () => undefined)
      connection.on("close", (error?: Error) => {
        lost.add(connection)
        Deferred.unsafeDone(closed, Exit.succeed(error?.message ?? "closed"))
      })
      connection.on("blocked", (reason: string) => (blockedBy = reason))
      connection.on("unblocked", () => (blockedBy = undefined))
      blockedBy = undefined
      yield* SubscriptionRef.set(state, Option.some(connection))
      yield* Effect.logInfo(`Connected to ${url}`)
      const reason = yield* Deferred.await(closed)
      yield* Effect.logWarning(`Connection to ${url} lost (${reason}); reconnecting`)
    }).pipe(Effect.scoped)

    yield* Effect.forkScoped(Effect.forever(connectionLifetime))

    const isCurrent = (connection: amqp.ChannelModel) =>
      Effect.map(SubscriptionRef.get(state), (current) => Option.contains(current, connection))

    const nextOpenConnection = state.changes.pipe(
      Stream.filterMap(Option.filter((connection) => !lost.has(connection))),
      Stream.runHead,
      Effect.map(Option.getOrThrow) // `changes` never ends
    )

    const withEveryConnection = <E, R>(session: (connection: amqp.ChannelModel) => Effect.Effect<void, E, R>) => {
      const keepSession = (connection: amqp.ChannelModel) =>
        Effect.suspend(() => (lost.has(connection) ? Effect.void : Effect.scoped(session(connection)))).pipe(
          Effect.exit,
          Effect.flatMap((exit) =>
            Exit.isFailure(exit) && !Cause.isInterruptedOnly(exit.cause)
              ? Effect.whenEffect(Effect.logError(describeCause(exit.cause)), isCurrent(connection))
              : Effect.void
          ),
          Effect.repeat({ schedule: sessionRestartSchedule, while: () => !lost.has(connection) })
        )
      // One session at a time, on the newest open connection, until that connection is lost: every
      // session ends by itself then, as its channel closes with the connection. (Interrupting it
      // instead, with `Stream.flatMap(..., { switch: true })` over `state`, left the consumer's
      // session running on the dead connection when the interruption came while it was closing.)
      return Effect.forever(Effect.flatMap(nextOpenConnection, keepSession)) as Effect.Effect<
        never,
        never,
        Exclude<R, Scope.Scope>
      >
    }

    return AmqpConnection.of({ state, blockedBy: () => blockedBy, withEveryConnection })
  })
