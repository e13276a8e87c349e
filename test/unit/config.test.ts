import { afterAll, describe, expect, it } from "@effect/vitest"
import { ConfigProvider, Effect, Option, Redacted } from "effect"
import { generateKeyPairSync } from "node:crypto"
import { mkdtempSync, rmSync, writeFileSync } from "node:fs"
import { tmpdir } from "node:os"
import { join } from "node:path"
import { describeConfigError } from "../../src/config/Env"
import { redactUrl, SharedConfig } from "../../src/config/SharedConfig"
import { NotificationConfig } from "../../src/notification/NotificationConfig"
import { OrderConfig } from "../../src/order/OrderConfig"

const load = <A>(config: Effect.Effect<A, unknown>, env: Record<string, string>) =>
  config.pipe(Effect.withConfigProvider(ConfigProvider.fromMap(new Map(Object.entries(env)))))

const errorLine = <A>(config: Effect.Effect<A, unknown>, env: Record<string, string>) =>
  load(config, env).pipe(
    Effect.flip,
    Effect.map((error) => describeConfigError(error as never))
  )

describe("configuration", () => {
  it.effect("has the contract's defaults", () =>
    Effect.gen(function*() {
      const shared = yield* load(SharedConfig, {})
      expect(shared.amqpUrls.map(Redacted.value)).toEqual(["amqp://guest:guest@localhost:5672"])
      expect(shared.commandQueue).toBe("send_notification_command")
      const order = yield* load(OrderConfig, {})
      expect(order.port).toBe(3000)
      const notification = yield* load(NotificationConfig, {})
      expect(notification).toMatchObject({
        prefetch: 1,
        failureRate: 0,
        retryPolicy: { maxAttempts: 5, firstDelayMillis: 1000, maxDelayMillis: 60_000 },
        healthPort: 3001
      })
    }))

  const invalid: ReadonlyArray<[string, Effect.Effect<unknown, unknown>, Record<string, string>, string]> = [
    ["PORT=abc", OrderConfig, { PORT: "abc" }, "PORT must be an integer from 1 to 65535 (got \"abc\")"],
    ["PORT=70000", OrderConfig, { PORT: "70000" }, "PORT must be an integer from 1 to 65535 (got \"70000\")"],
    ["NOTIFICATION_PREFETCH=0", NotificationConfig, { NOTIFICATION_PREFETCH: "0" }, "NOTIFICATION_PREFETCH must be an integer from 1 to 65535 (got \"0\")"],
    ["NOTIFICATION_FAILURE_RATE=2", NotificationConfig, { NOTIFICATION_FAILURE_RATE: "2" }, "NOTIFICATION_FAILURE_RATE must be a number from 0 to 1 (got \"2\")"],
    ["NOTIFICATION_RETRY_DELAY_MS=-1", NotificationConfig, { NOTIFICATION_RETRY_DELAY_MS: "-1" }, "NOTIFICATION_RETRY_DELAY_MS must be an integer from 0 to 3600000 (got \"-1\")"],
    ["a max delay below the first", NotificationConfig, { NOTIFICATION_RETRY_DELAY_MS: "5000", NOTIFICATION_RETRY_MAX_DELAY_MS: "1000" }, "NOTIFICATION_RETRY_MAX_DELAY_MS must be at least NOTIFICATION_RETRY_DELAY_MS (got 1000, below 5000)"],
    ["PUBLISH_TIMEOUT_MS=1.5", SharedConfig, { PUBLISH_TIMEOUT_MS: "1.5" }, "PUBLISH_TIMEOUT_MS must be an integer from 1 to 600000 (got \"1.5\")"],
    ["OUTBOX_MAX_PENDING=0", OrderConfig, { OUTBOX_MAX_PENDING: "0" }, "OUTBOX_MAX_PENDING must be an integer from 1 to 100000000 (got \"0\")"],
    ["ORDER_EVENTS_QUEUE=amq.x", OrderConfig, { ORDER_EVENTS_QUEUE: "amq.x" }, "ORDER_EVENTS_QUEUE must be a queue name"],
    ["AMQP_URL=http://x", SharedConfig, { AMQP_URL: "http://x" }, "AMQP_URL must be a comma-separated list of amqp:// or amqps:// URLs"]
  ]
  for (const [what, config, env, expected] of invalid) {
    it.effect(`rejects ${what} with one line naming the variable and what it expects`, () =>
      Effect.gen(function*() {
        const line = yield* errorLine(config, env)
        expect(line).toContain(expected)
        expect(line.startsWith("Invalid configuration: ")).toBe(true)
        expect(line).not.toContain("\n")
      }))
  }

  it.effect("names every invalid variable at once", () =>
    Effect.gen(function*() {
      const line = yield* errorLine(NotificationConfig, { NOTIFICATION_PREFETCH: "0", NOTIFICATION_MAX_ATTEMPTS: "none" })
      expect(line).toContain("NOTIFICATION_PREFETCH")
      expect(line).toContain("NOTIFICATION_MAX_ATTEMPTS")
    }))

  it.effect("never echoes a broker password in an error", () =>
    Effect.gen(function*() {
      const line = yield* errorLine(SharedConfig, { AMQP_URL: "amqp://guest:s3cret@host:5672,ftp://nope" })
      expect(line).toContain("AMQP_URL")
      expect(line).not.toContain("s3cret")
    }))

  it.effect("reads a comma-separated AMQP_URL as several nodes", () =>
    Effect.gen(function*() {
      const { amqpUrls } = yield* load(SharedConfig, { AMQP_URL: "amqp://a:p@node1:5672, amqp://a:p@node2:5672" })
      expect(amqpUrls.map(redactUrl)).toEqual(["amqp://a:***@node1:5672", "amqp://a:***@node2:5672"])
    }))
})

/** A self-signed certificate whose key was thrown away: public, and all the checks below need. */
const CERTIFICATE = `-----BEGIN CERTIFICATE-----
MIIBgjCCASmgAwIBAgIUHjfZ/qlVtZa4s+irKq3KYygVzC0wCgYIKoZIzj0EAwIw
FjEUMBIGA1UEAwwLY29uZmlnLXRlc3QwIBcNMjYxMjAyMTU0NTM0WhgPMjEyNjEx
MDgxNTQ1MzRaMBYxFDASBgNVBAMMC2NvbmZpZy10ZXN0MFkwEwYHKoZIzj0CAQYI
KoZIzj0DAQcDQgAEp9KDVlMqj4ukV2vilz/r8UDAPrSb32yBPN2LBS4kcY9oH368
GPVXHzjFR0oH/Ss3aMC8sw2uK7/gUDalfTedWaNTMFEwHQYDVR0OBBYEFEPfP/dc
Xh0uT7iam66Ye1OHfHsRMB8GA1UdIwQYMBaAFEPfP/dcXh0uT7iam66Ye1OHfHsR
MA8GA1UdEwEB/wQFMAMBAf8wCgYIKoZIzj0EAwIDRwAwRAIgFvz4rozKiKkzmzG1
mZPLVJf/sArVZSYljcvLfYYrc90CIBHatjKAEbiMgC5ujWOvsWAvUVUvFW4PCBeA
RqEUTlEr
-----END CERTIFICATE-----
`

describe("AMQP_CA_FILE, AMQP_CERT_FILE and AMQP_KEY_FILE", () => {
  const folder = mkdtempSync(join(tmpdir(), "amqp-tls-config-"))
  afterAll(() => rmSync(folder, { recursive: true, force: true }))
  const file = (name: string, content: string) => {
    const path = join(folder, name)
    writeFileSync(path, content)
    return path
  }
  const certificate = file("certificate.pem", CERTIFICATE)
  // A key of its own, not the certificate's.
  const otherKey = file("other.key", generateKeyPairSync("ec", { namedCurve: "P-256" }).privateKey.export({ type: "pkcs8", format: "pem" }) as string)
  const missing = join(folder, "missing.pem")
  const garbage = file("garbage.pem", "not a certificate\n")

  it.effect("are unset by default, and a CA file is read at start", () =>
    Effect.gen(function*() {
      expect((yield* load(SharedConfig, {})).amqpTls).toEqual({ ca: Option.none(), client: Option.none() })
      expect((yield* load(SharedConfig, { AMQP_CA_FILE: certificate })).amqpTls.ca).toEqual(Option.some(CERTIFICATE))
    }))

  const invalid: ReadonlyArray<[string, Record<string, string>, string]> = [
    ["an unreadable file", { AMQP_CA_FILE: missing }, `AMQP_CA_FILE names a file that cannot be read: ${missing} (no such file)`],
    ["a CA file with no certificate", { AMQP_CA_FILE: garbage }, `AMQP_CA_FILE names a file that holds no PEM certificate: ${garbage} (no start line)`],
    ["a certificate without its key", { AMQP_CERT_FILE: certificate }, "AMQP_KEY_FILE must be set with AMQP_CERT_FILE: a client certificate goes with its key (set both, or neither)"],
    ["a key without its certificate", { AMQP_KEY_FILE: otherKey }, "AMQP_CERT_FILE must be set with AMQP_KEY_FILE: a client certificate goes with its key (set both, or neither)"],
    [
      "a key that is not the certificate's",
      { AMQP_CERT_FILE: certificate, AMQP_KEY_FILE: otherKey },
      `AMQP_CERT_FILE and AMQP_KEY_FILE must name a PEM certificate and its key: ${certificate}, ${otherKey} (key values mismatch)`
    ]
  ]
  for (const [what, env, expected] of invalid) {
    it.effect(`reject ${what} with one line naming the variable and the path, and no file's content`, () =>
      Effect.gen(function*() {
        const line = yield* errorLine(SharedConfig, env)
        expect(line).toBe(`Invalid configuration: ${expected}`)
        expect(line).not.toContain("-----")
      }))
  }
})
