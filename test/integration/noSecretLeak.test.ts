import * as SqlClient from "@effect/sql/SqlClient"
import { PgClient } from "@effect/sql-pg"
import { describe, expect, it } from "@effect/vitest"
import { Context, Duration, Effect, Layer, Redacted } from "effect"
import { randomBytes } from "node:crypto"
import { writeFileSync } from "node:fs"
import { join } from "node:path"
import { AMQP_URL, eventually, rabbitmqctl, testBroker, uniqueQueueName } from "../support/broker"
import { otlpReceiver } from "../support/observability"
import { freePort, type ServiceProcess, spawnService } from "../support/processes"
import { temporaryFolder } from "../support/services"

/**
 * The real services as processes, given secrets of the test's own (a broker user with a random
 * password, a PostgreSQL URL with one, an API token), some refused requests and one order that is
 * notified: none of the secrets may show in a log line, an HTTP answer, /metrics or a span.
 */

const TEST_DATABASE_URL = process.env.TEST_DATABASE_URL ?? "postgres://postgres@127.0.0.1:5432/test"

const random = (label: string) => `${label}${randomBytes(12).toString("hex")}`

/** A RabbitMQ user of the test's own, with a random password and every permission on "/"; deleted after. */
const brokerUser = Effect.acquireRelease(
  Effect.promise(async () => {
    const user = random("test-secrets-")
    const password = random("amqppw")
    await rabbitmqctl("add_user", user, password)
    await rabbitmqctl("set_permissions", "-p", "/", user, ".*", ".*", ".*")
    const url = new URL(AMQP_URL)
    url.username = user
    url.password = password
    return { user, password, url: url.toString().replace(/\/$/, "") }
  }),
  ({ user }) => Effect.promise(() => rabbitmqctl("delete_user", user))
)

/**
 * A schema of the test's own on the shared PostgreSQL (trust authentication: any password is
 * accepted, so a random one can stand for the secret), dropped after; the URL the service gets.
 */
const postgresSchema = Effect.gen(function*() {
  const schema = random("test_secrets_")
  const password = random("pgpw")
  const admin = yield* Layer.build(PgClient.layer({ url: Redacted.make(TEST_DATABASE_URL), connectTimeout: Duration.seconds(5) }))
  const sql = Context.get(admin, SqlClient.SqlClient)
  yield* Effect.acquireRelease(sql`CREATE SCHEMA ${sql(schema)}`, () => Effect.orDie(sql`DROP SCHEMA ${sql(schema)} CASCADE`))
  const url = new URL(TEST_DATABASE_URL)
  url.password = password
  url.searchParams.set("options", `-c search_path=${schema}`)
  return { password, url: url.toString() }
})

const ready = (url: string) =>
  eventually(
    () => fetch(url).then(async (response) => ({ status: response.status, body: await response.json() as { broker?: string } }), () => undefined),
    (answer) => answer?.status === 200 && (answer.body.broker === undefined || answer.body.broker === "up"),
    { what: `${url} to answer 200`, timeoutMs: 25_000 }
  )

interface Answer {
  readonly status: number
  readonly headers: Headers
  readonly body: string
}

const request = (url: string, init: RequestInit = {}): Effect.Effect<Answer> =>
  Effect.promise(async () => {
    const response = await fetch(url, init)
    return { status: response.status, headers: response.headers, body: await response.text() }
  })

/** What each line, answer or export holds of `secrets`: [where, secret] for each one found. */
const leaks = (where: string, texts: ReadonlyArray<string>, secrets: ReadonlyArray<string>) =>
  texts.flatMap((text) => secrets.filter((secret) => text.includes(secret)).map((secret) => [where, secret, text] as const))

/** A service started with a bad configuration: exit 1, one line, the one given. */
const expectOneConfigLine = (service: ServiceProcess, exitCode: number | null, secrets: ReadonlyArray<string>) => {
  expect(exitCode).toBe(1)
  const printed = service.lines.filter((line) => line.trim() !== "")
  expect(printed).toHaveLength(1)
  expect(leaks("the configuration error", printed, secrets)).toEqual([])
  return String((JSON.parse(printed[0]!) as { message: unknown }).message)
}

describe("no secret leaks", () => {
  it.scopedLive("tokens and passwords never show in logs, HTTP answers, metrics or spans", () =>
    Effect.gen(function*() {
      const queue = uniqueQueueName("secrets")
      yield* testBroker(queue)
      const broker = yield* brokerUser
      const database = yield* postgresSchema
      const token = random("tok")
      const secrets = [broker.password, database.password, token]

      // The order service reads its secrets from files, as mounted secrets; the notification service from the environment.
      const folder = yield* temporaryFolder
      const amqpUrlFile = join(folder, "amqp-url")
      const databaseUrlFile = join(folder, "database-url")
      const tokenFile = join(folder, "token")
      writeFileSync(amqpUrlFile, `${broker.url}\n`)
      writeFileSync(databaseUrlFile, `${database.url}\n`)
      writeFileSync(tokenFile, `${token}\n`)

      const receiver = yield* otlpReceiver
      const [orderPort, notificationPort] = [yield* freePort, yield* freePort]
      const common = {
        COMMAND_QUEUE: queue,
        LOG_LEVEL: "debug",
        OTEL_EXPORTER_OTLP_ENDPOINT: receiver.url,
        OTEL_EXPORTER_OTLP_PROTOCOL: "http/json",
        OTEL_BSP_SCHEDULE_DELAY: 100
      }
      const order = yield* spawnService("order/main.ts", {
        ...common,
        PORT: orderPort,
        AMQP_URL: "",
        AMQP_URL_FILE: amqpUrlFile,
        DATABASE_URL: "",
        DATABASE_URL_FILE: databaseUrlFile,
        ORDER_API_TOKEN_FILE: tokenFile
      })
      const notification = yield* spawnService("notification/main.ts", {
        ...common,
        AMQP_URL: broker.url,
        NOTIFICATION_HEALTH_PORT: notificationPort,
        NOTIFICATION_SEND_DELAY_MS: 10
      })
      const api = `http://127.0.0.1:${orderPort}`
      yield* ready(`${api}/health/ready`)
      yield* ready(`http://127.0.0.1:${notificationPort}/health/ready`)
      // The services really are connected as the broker user of the test's own.
      expect(yield* Effect.promise(() => rabbitmqctl("list_connections", "user"))).toContain(broker.user)

      const json = { "content-type": "application/json" }
      const withToken = { ...json, authorization: `Bearer ${token}` }
      const order42 = JSON.stringify({ userId: 42 })
      const refused = [
        yield* request(`${api}/orders`, { method: "POST", headers: json, body: order42 }),
        yield* request(`${api}/orders`, { method: "POST", headers: { ...json, authorization: `Bearer ${token}x` }, body: order42 }),
        yield* request(`${api}/orders?userId=42`, { headers: { authorization: `Bearer ${broker.password}` } })
      ]
      expect(refused.map((answer) => answer.status)).toEqual([401, 401, 401])
      const failed = [
        yield* request(`${api}/orders`, { method: "POST", headers: withToken, body: "{\"userId\": " }),
        yield* request(`${api}/orders`, { method: "POST", headers: withToken, body: JSON.stringify({ userId: -1 }) }),
        yield* request(`${api}/orders/0190a2b4-8c1d-7e2f-9a3b-4c5d6e7f8091`, { headers: withToken })
      ]
      expect(failed.map((answer) => answer.status)).toEqual([400, 400, 404])

      const created = yield* request(`${api}/orders`, { method: "POST", headers: withToken, body: order42 })
      expect(created.status).toBe(201)
      const orderId = (JSON.parse(created.body) as { order: { orderId: string } }).order.orderId
      const notified = yield* eventually(
        () => fetch(`${api}/orders/${orderId}`, { headers: withToken }).then((response) => response.text()),
        (body) => (JSON.parse(body) as { status: string }).status === "notified",
        { what: "the order to be notified", timeoutMs: 20_000 }
      )
      // Both services have logged what they did with it (the JSON line's fields may come in any order).
      yield* notification.waitForLine(new RegExp(`Sending notification for order ${orderId}`))

      const scraped = [
        yield* request(`${api}/metrics`),
        yield* request(`http://127.0.0.1:${notificationPort}/metrics`),
        yield* request(`${api}/health/ready`),
        yield* request(`http://127.0.0.1:${notificationPort}/health/ready`)
      ]
      expect(scraped.map((answer) => answer.status)).toEqual([200, 200, 200, 200])

      // The whole trace of the order, and the refused requests' spans, have been exported.
      yield* eventually(
        async () => receiver.spans,
        (spans) => {
          const request = spans.find((span) => span.name === "http.server POST" && span.attributes["http.response.status_code"] === 201)
          return request !== undefined &&
            spans.some((span) => span.traceId === request.traceId && span.name === "EventConsumer.consume") &&
            // The notification service exports on its own schedule: its part of the trace too.
            spans.some((span) => span.traceId === request.traceId && span.serviceName === "notification-service") &&
            spans.filter((span) => span.attributes["http.response.status_code"] === 401).length === 3
        },
        { what: "the spans of the order and of the refused requests", timeoutMs: 20_000 }
      )
      const serviceNames = new Set(receiver.spans.map((span) => span.serviceName))
      expect(serviceNames).toEqual(new Set(["order-service", "notification-service"]))
      // The authorization header is on the spans, redacted.
      expect(receiver.spans.some((span) => span.attributes["http.request.header.authorization"] === "<redacted>")).toBe(true)

      // What the services printed is there to be searched: the lines naming the broker and the store among it.
      const connected = `Connected to amqp://${broker.user}:***@`
      expect(order.lines.some((line) => line.includes(connected))).toBe(true)
      expect(order.lines.some((line) => line.includes("Order store ready (PostgreSQL postgres://postgres:***@"))).toBe(true)
      expect(notification.lines.some((line) => line.includes(connected))).toBe(true)

      expect([
        ...leaks("order-service log", order.lines, secrets),
        ...leaks("notification-service log", notification.lines, secrets),
        ...leaks("HTTP answer", [...refused, ...failed, created, ...scraped].map((answer) => answer.body + JSON.stringify([...answer.headers])), secrets),
        ...leaks("order answer", [notified], secrets),
        ...leaks("span", receiver.spans.map((span) => JSON.stringify(span)), secrets),
        ...leaks("OTLP export", receiver.requests.map((exported) => exported.body.toString("utf8")), secrets)
      ]).toEqual([])

      // Each service once more, with a bad configuration holding the secrets: one line, none of them.
      const tokenBothWays = yield* spawnService("order/main.ts", { ORDER_API_TOKEN: token, ORDER_API_TOKEN_FILE: tokenFile })
      const amqpBothWays = yield* spawnService("notification/main.ts", {
        AMQP_URL: broker.url,
        AMQP_URL_FILE: amqpUrlFile,
        NOTIFICATION_HEALTH_PORT: yield* freePort
      })
      const badAmqpUrl = yield* spawnService("order/main.ts", { AMQP_URL: `${broker.url},ftp://nope`, PORT: yield* freePort })
      const badDatabaseUrl = join(folder, "bad-database-url")
      writeFileSync(badDatabaseUrl, `mysql://postgres:${database.password}@127.0.0.1/test\n`)
      const badDatabase = yield* spawnService("order/main.ts", { DATABASE_URL: "", DATABASE_URL_FILE: badDatabaseUrl })
      const [tokenLine, amqpLine, badAmqpLine, badDatabaseLine] = yield* Effect.all(
        [tokenBothWays, amqpBothWays, badAmqpUrl, badDatabase].map((service) =>
          Effect.map(service.exitCode, (exitCode) => expectOneConfigLine(service, exitCode, secrets))
        ),
        { concurrency: "unbounded" }
      )
      expect(tokenLine).toBe("Invalid configuration: ORDER_API_TOKEN and ORDER_API_TOKEN_FILE are both set; set only one of them")
      expect(amqpLine).toBe("Invalid configuration: AMQP_URL and AMQP_URL_FILE are both set; set only one of them")
      expect(badAmqpLine).toContain(`AMQP_URL must be a comma-separated list of amqp:// or amqps:// URLs (got "amqp://`)
      expect(badAmqpLine).toContain(`${broker.user}:***@`)
      expect(badDatabaseLine).toContain("DATABASE_URL must be a SQLite path, file:PATH, or a postgres:// or postgresql:// URL (got \"mysql://postgres:***@")
    }), 90_000)
})
