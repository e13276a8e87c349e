import { afterAll, describe, expect, it } from "@effect/vitest"
import { type Config, ConfigProvider, Effect, Option, Redacted } from "effect"
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from "node:fs"
import { tmpdir } from "node:os"
import { join } from "node:path"
import { describeConfigError, fromFileOr } from "../../src/config/Env"
import { SharedConfig } from "../../src/config/SharedConfig"
import { OrderConfig } from "../../src/order/OrderConfig"
import { DatabaseConfig } from "../../src/order/store/Database"

const folder = mkdtempSync(join(tmpdir(), "secret-files-"))
afterAll(() => rmSync(folder, { recursive: true, force: true }))

let files = 0
/** A file of the test's own holding `content`, as a mounted secret would. */
const secretFile = (content: string) => {
  const path = join(folder, `secret-${++files}`)
  writeFileSync(path, content)
  return path
}

const load = <A>(config: Config.Config<A>, env: Record<string, string>) =>
  Effect.withConfigProvider(config, ConfigProvider.fromMap(new Map(Object.entries(env))))

const errorLine = <A>(config: Config.Config<A>, env: Record<string, string>) =>
  Effect.map(Effect.flip(load(config, env)), describeConfigError)

const PASSWORD = "pw-4f1c9e2a7b"
const TOKEN = "tok-8d3e6b0c51"

/** Each secret-bearing variable, the config that reads it, a valid value, and how to see what was read. */
const secrets = [
  {
    name: "AMQP_URL",
    config: SharedConfig as Config.Config<unknown>,
    value: `amqp://app:${PASSWORD}@broker:5672`,
    read: (config: any): string => Redacted.value(config.amqpUrls[0])
  },
  {
    name: "DATABASE_URL",
    config: DatabaseConfig as Config.Config<unknown>,
    value: `postgres://app:${PASSWORD}@db:5432/orders`,
    read: (target: any): string => Redacted.value(target.url)
  },
  {
    name: "ORDER_API_TOKEN",
    config: OrderConfig as Config.Config<unknown>,
    value: TOKEN,
    read: (config: any): string => Redacted.value(Option.getOrThrow(config.apiToken))
  }
] as const

/** One line, the configuration error's, with none of the secrets in it. */
const expectOneLineWithoutSecrets = (line: string) => {
  expect(line.startsWith("Invalid configuration: ")).toBe(true)
  expect(line).not.toContain("\n")
  expect(line).not.toContain(PASSWORD)
  expect(line).not.toContain(TOKEN)
}

describe("the _FILE form of a secret", () => {
  for (const { config, name, read, value } of secrets) {
    describe(name, () => {
      it.effect(`is read from the file ${name}_FILE names, one trailing \\n or \\r\\n trimmed`, () =>
        Effect.gen(function*() {
          for (const content of [value, `${value}\n`, `${value}\r\n`]) {
            expect(read(yield* load(config, { [`${name}_FILE`]: secretFile(content) }))).toBe(value)
          }
        }))

      it.effect(`${name} itself is still read, and an empty ${name} beside ${name}_FILE counts as unset`, () =>
        Effect.gen(function*() {
          expect(read(yield* load(config, { [name]: value }))).toBe(value)
          expect(read(yield* load(config, { [name]: "", [`${name}_FILE`]: secretFile(value) }))).toBe(value)
        }))

      it.effect(`both ${name} and ${name}_FILE set is one line naming both`, () =>
        Effect.gen(function*() {
          const line = yield* errorLine(config, { [name]: value, [`${name}_FILE`]: secretFile(value) })
          expect(line).toBe(`Invalid configuration: ${name} and ${name}_FILE are both set; set only one of them`)
          expectOneLineWithoutSecrets(line)
        }))

      it.effect(`a missing file is one line naming ${name}_FILE and the path`, () =>
        Effect.gen(function*() {
          const path = join(folder, "not-there")
          const line = yield* errorLine(config, { [`${name}_FILE`]: path })
          expect(line).toBe(`Invalid configuration: ${name}_FILE names a file that cannot be read: ${path} (no such file)`)
          expectOneLineWithoutSecrets(line)
        }))

      it.effect(`an empty file is an error, not the default`, () =>
        Effect.gen(function*() {
          for (const content of ["", "\n"]) {
            const path = secretFile(content)
            const line = yield* errorLine(config, { [`${name}_FILE`]: path })
            expect(line).toBe(`Invalid configuration: ${name}_FILE names an empty file ${path}`)
          }
        }))
    })
  }

  it.effect("a folder is not a file", () =>
    Effect.gen(function*() {
      const path = join(folder, "a-folder")
      mkdirSync(path)
      expect(yield* errorLine(SharedConfig, { AMQP_URL_FILE: path })).toBe(
        `Invalid configuration: AMQP_URL_FILE names a file that cannot be read: ${path} (a folder)`
      )
    }))

  it.effect("trims one trailing newline and no more", () =>
    Effect.gen(function*() {
      expect(yield* load(fromFileOr("X"), { X_FILE: secretFile("a b\n\n") })).toEqual(Option.some("a b\n"))
      expect(yield* load(fromFileOr("X"), {})).toEqual(Option.none())
    }))

  it.effect("a file's content is validated as the variable's value, and echoed masked or not at all", () =>
    Effect.gen(function*() {
      const amqp = yield* errorLine(SharedConfig, { AMQP_URL_FILE: secretFile(`amqp://app:${PASSWORD}@broker:5672,ftp://x\n`) })
      expect(amqp).toContain("AMQP_URL must be a comma-separated list of amqp:// or amqps:// URLs (got \"amqp://app:***@broker")
      expectOneLineWithoutSecrets(amqp)
      const database = yield* errorLine(DatabaseConfig, { DATABASE_URL_FILE: secretFile(`mysql://app:${PASSWORD}@db\n`) })
      expect(database).toContain("DATABASE_URL must be a SQLite path")
      expectOneLineWithoutSecrets(database)
      for (const env of [{ ORDER_API_TOKEN_FILE: secretFile(`${TOKEN} ${TOKEN}\n`) }, { ORDER_API_TOKEN: `${TOKEN}é` }]) {
        const token = yield* errorLine(OrderConfig, env)
        expect(token).toBe("Invalid configuration: ORDER_API_TOKEN must be visible ASCII characters, without spaces")
        expectOneLineWithoutSecrets(token)
      }
    }))

  it.effect("several secrets at fault are named together, none of them echoed", () =>
    Effect.gen(function*() {
      const line = yield* errorLine(SharedConfig, {
        AMQP_URL: `amqp://app:${PASSWORD}@broker`,
        AMQP_URL_FILE: secretFile(`amqp://app:${PASSWORD}@broker`),
        PUBLISH_TIMEOUT_MS: "soon"
      })
      expect(line).toContain("AMQP_URL and AMQP_URL_FILE are both set")
      expect(line).toContain("PUBLISH_TIMEOUT_MS must be")
      expectOneLineWithoutSecrets(line)
    }))

  it.effect("ORDER_API_TOKEN is unset by default: no token is asked for", () =>
    Effect.gen(function*() {
      expect((yield* load(OrderConfig, {})).apiToken).toEqual(Option.none())
      expect((yield* load(OrderConfig, { ORDER_API_TOKEN: "  " })).apiToken).toEqual(Option.none())
      const { apiToken } = yield* load(OrderConfig, { ORDER_API_TOKEN: TOKEN })
      expect(String(Option.getOrThrow(apiToken))).not.toContain(TOKEN)
    }))
})
