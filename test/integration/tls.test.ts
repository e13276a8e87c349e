import { HttpClient, HttpClientRequest } from "@effect/platform"
import { describe, expect, layer } from "@effect/vitest"
import { Effect, Layer, Logger, Redacted } from "effect"
import { randomUUID } from "node:crypto"
import { redactUrl } from "../../src/config/SharedConfig"
import { AmqpConnection } from "../../src/messaging/AmqpConnection"
import { eventually, testConfig, uniqueQueueName } from "../support/broker"
import { rabbitmqctlOn } from "../support/rabbitNode"
import { notificationConsumer, orderService, orderUntil } from "../support/services"
import { expiredCertificateEndpoint, TLS_NODE, TlsBroker, tlsUrl, UNNAMED_ADDRESS } from "../support/tlsBroker"

type Json = Record<string, any>

/** In the URL of every connection that must fail before it authenticates: it must never be logged. */
const PASSWORD = `pw-${randomUUID().slice(0, 8)}`

/** Every line logged, with its time. */
const timedLogger = () => {
  const lines: Array<{ readonly at: number; readonly text: string }> = []
  const layer = Logger.replace(
    Logger.defaultLogger,
    Logger.make(({ date, message }) =>
      lines.push({ at: date.getTime(), text: (Array.isArray(message) ? message : [message]).map(String).join(" ") }))
  )
  return { lines, layer }
}

/** The TLS node's client connections named `name`: whether each is TLS, and the client certificate it presented. */
const connectionsNamed = (name: string) =>
  Effect.promise(async () => {
    const output = await rabbitmqctlOn(TLS_NODE, "list_connections", "client_properties", "ssl", "peer_cert_subject", "--formatter", "json")
    const rows = JSON.parse(output) as Array<{ client_properties: Array<[string, string, unknown]>; ssl: boolean; peer_cert_subject: string }>
    return rows
      .filter((row) => row.client_properties.some(([key, , value]) => key === "connection_name" && value === name))
      .map((row) => ({ ssl: row.ssl, clientCertificate: row.peer_cert_subject }))
  })

const post = (body: unknown) =>
  HttpClientRequest.post("/orders").pipe(
    HttpClientRequest.bodyUnsafeJson(body),
    HttpClient.execute,
    Effect.flatMap((response) => Effect.map(response.json, (json) => ({ response, body: json as Json })))
  )


/**
 * The real order and notification services on `env`: an order is accepted, its command goes to the
 * notification service and its event back, so both connections carried traffic; then each service
 * has one connection on the node, TLS, with `clientCertificate` (the subject it presented, "" for
 * none). Returns the log.
 */
const roundTrip = (env: Record<string, string>, clientCertificate: string) =>
  Effect.gen(function*() {
    const logs = timedLogger()
    const queue = uniqueQueueName("tls")
    yield* Effect.gen(function*() {
      const { body, response } = yield* post({ userId: 7 })
      expect(response.status).toBe(201)
      const notified = yield* orderUntil(body.order.orderId, (order) => order.status === "notified")
      expect(notified).toMatchObject({ status: "notified", notifications: 1 })
      for (const name of ["test-order-service", "test-notification-service"]) {
        expect(yield* connectionsNamed(name)).toEqual([{ ssl: true, clientCertificate }])
      }
    }).pipe(Effect.provide(
      Layer.merge(
        orderService({ ...env, COMMAND_QUEUE: queue }),
        notificationConsumer({ ...env, COMMAND_QUEUE: queue, NOTIFICATION_SEND_DELAY_MS: 0 })
      ).pipe(Layer.provide(logs.layer))
    ))
    return logs.lines.map(({ text }) => text)
  })

const isAttempt = (text: string) => text.startsWith("Broker not reachable at ")

/**
 * The connection layer on `env` until it has logged `attempts` failed attempts: its log, and its
 * connections as the node saw them then.
 */
const failedAttempts = (env: Record<string, string>, attempts = 4) =>
  Effect.gen(function*() {
    const connectionName = `test-tls-${randomUUID().slice(0, 8)}`
    const logs = timedLogger()
    const onNode = yield* Effect.gen(function*() {
      yield* AmqpConnection
      yield* eventually(async () => logs.lines.filter(({ text }) => isAttempt(text)).length, (count) => count >= attempts, {
        what: `${attempts} failed connection attempts`
      })
      return yield* connectionsNamed(connectionName)
    }).pipe(
      Effect.provide(AmqpConnection.layer({ connectionName }).pipe(Layer.provide(testConfig(env)), Layer.provide(logs.layer))),
      Effect.scoped
    )
    return { lines: logs.lines, onNode }
  })

/**
 * Every attempt was refused for `reason`, each in the one line the reconnect loop logs, with the
 * password masked; the attempts backed off; nothing connected, over TLS or otherwise.
 */
const expectRefused = (result: Effect.Effect.Success<ReturnType<typeof failedAttempts>>, url: string, reason: string) => {
  const attempts = result.lines.filter(({ text }) => isAttempt(text))
  for (const { text } of attempts) {
    expect(text).toBe(`Broker not reachable at ${redactUrl(Redacted.make(url))} (${reason}); retrying with backoff`)
    expect(text).not.toContain(PASSWORD)
  }
  // Jittered backoff from 100 ms doubling: the first three waits are at least 80% of 100 + 200 + 400 ms.
  expect(attempts[3]!.at - attempts[0]!.at).toBeGreaterThanOrEqual(560)
  expect(result.lines.filter(({ text }) => !isAttempt(text))).toEqual([])
  expect(result.onNode).toEqual([])
}

describe("TLS to the broker (amqps://)", () => {
  const broker = TlsBroker.layer({ requireClientCertificate: false })
  layer(broker, { timeout: "3 minutes", excludeTestServices: true })("a node that verifies the client certificates it is given", (it) => {
    it.scoped("with AMQP_CA_FILE the services connect over TLS, by the certificate's name or IP address, and an order is notified", () =>
      Effect.gen(function*() {
        const { certificates } = yield* TlsBroker
        for (const host of ["localhost", "127.0.0.1"]) {
          const lines = yield* roundTrip({ AMQP_URL: tlsUrl(host), AMQP_CA_FILE: certificates.ca }, "")
          expect(lines).toContain(`Connected to amqps://guest:***@${host}:5691`)
          expect(lines.filter(isAttempt)).toEqual([])
        }
      }), 60_000)

    it.scoped("a broker certificate from another CA, or Node's CAs alone, is refused on every attempt, even with NODE_TLS_REJECT_UNAUTHORIZED=0", () =>
      Effect.gen(function*() {
        const { certificates } = yield* TlsBroker
        const url = tlsUrl("localhost", PASSWORD)
        const reason = "self-signed certificate in certificate chain"
        expectRefused(yield* failedAttempts({ AMQP_URL: url, AMQP_CA_FILE: certificates.otherCa }), url, reason)
        expectRefused(yield* failedAttempts({ AMQP_URL: url }), url, reason)
        // Node's switch for turning verification off everywhere must not reach the broker connection.
        yield* Effect.acquireRelease(
          Effect.sync(() => (process.env.NODE_TLS_REJECT_UNAUTHORIZED = "0")),
          () => Effect.sync(() => delete process.env.NODE_TLS_REJECT_UNAUTHORIZED)
        )
        expectRefused(yield* failedAttempts({ AMQP_URL: url, AMQP_CA_FILE: certificates.otherCa }), url, reason)
      }), 60_000)

    it.scoped("a host name the certificate does not name is refused on every attempt", () =>
      Effect.gen(function*() {
        const { certificates } = yield* TlsBroker
        const url = tlsUrl(UNNAMED_ADDRESS, PASSWORD)
        expectRefused(
          yield* failedAttempts({ AMQP_URL: url, AMQP_CA_FILE: certificates.ca }),
          url,
          `Hostname/IP does not match certificate's altnames: IP: ${UNNAMED_ADDRESS} is not in the cert's list: 127.0.0.1`
        )
      }), 60_000)

    it.scoped("an expired certificate is refused on every attempt", () =>
      Effect.gen(function*() {
        const { certificates } = yield* TlsBroker
        const port = yield* expiredCertificateEndpoint(certificates)
        const url = `amqps://guest:${PASSWORD}@localhost:${port}`
        expectRefused(yield* failedAttempts({ AMQP_URL: url, AMQP_CA_FILE: certificates.ca }), url, "certificate has expired")
      }), 60_000)
  })

  const strictBroker = TlsBroker.layer({ requireClientCertificate: true })
  layer(strictBroker, { timeout: "3 minutes", excludeTestServices: true })("a node that requires a client certificate", (it) => {
    it.scoped("with AMQP_CERT_FILE and AMQP_KEY_FILE the services connect with the client certificate, and an order is notified", () =>
      Effect.gen(function*() {
        const { certificates } = yield* TlsBroker
        const env = {
          AMQP_URL: tlsUrl("localhost"),
          AMQP_CA_FILE: certificates.ca,
          AMQP_CERT_FILE: certificates.clientCert,
          AMQP_KEY_FILE: certificates.clientKey
        }
        const lines = yield* roundTrip(env, "CN=test-client")
        expect(lines).toContain("Connected to amqps://guest:***@localhost:5691")
      }), 60_000)

    it.scoped("without a client certificate every attempt is refused by the node", () =>
      Effect.gen(function*() {
        const { certificates } = yield* TlsBroker
        const url = tlsUrl("localhost", PASSWORD)
        expectRefused(
          yield* failedAttempts({ AMQP_URL: url, AMQP_CA_FILE: certificates.ca }),
          url,
          "tlsv13 alert certificate required"
        )
      }), 60_000)
  })
})
