import { Config, ConfigError, Either, Option, Redacted } from "effect"
import { readFileSync } from "node:fs"

/** A variable's value, none when it is unset or blank (a blank one is how a compose file leaves it unset). */
const setValue = (name: string): Config.Config<Option.Option<string>> =>
  Config.string(name).pipe(Config.option, Config.map(Option.filter((value) => value.trim() !== "")))

const whyUnreadable = (error: unknown): string => {
  const code = (error as { readonly code?: unknown }).code
  return code === "ENOENT" ? "no such file" : code === "EACCES" ? "permission denied" : code === "EISDIR" ? "a folder" : String(code)
}

/** The content of the file at `path`, which `variable` names; one line naming both if it cannot be read or is empty. */
const readNamedFile = (variable: string, path: string): Either.Either<string, ConfigError.ConfigError> => {
  let content: string
  try {
    content = readFileSync(path, "utf8")
  } catch (error) {
    return Either.left(ConfigError.InvalidData([variable], `${variable} names a file that cannot be read: ${path} (${whyUnreadable(error)})`))
  }
  // A mounted secret that is empty is a deployment mistake, not a request for the default.
  return content.trim() === ""
    ? Either.left(ConfigError.InvalidData([variable], `${variable} names an empty file ${path}`))
    : Either.right(content)
}

/**
 * `NAME`, or the content of the file `NAME_FILE` names (as Docker and Kubernetes mount secrets) less
 * one trailing newline; none when neither is set. Both set, or a file that cannot be read or is empty,
 * is one line naming the variable and the path, never the content.
 */
export const fromFileOr = (name: string): Config.Config<Option.Option<string>> => {
  const fileVariable = `${name}_FILE`
  return Config.all([setValue(name), setValue(fileVariable)]).pipe(
    Config.mapOrFail(([value, file]) => {
      if (Option.isNone(file)) return Either.right(value)
      if (Option.isSome(value)) {
        return Either.left(ConfigError.InvalidData([name], `${name} and ${fileVariable} are both set; set only one of them`))
      }
      return Either.map(readNamedFile(fileVariable, file.value.trim()), (content) => Option.some(content.replace(/\r?\n$/, "")))
    })
  )
}

/** The file the variable `name` names (a certificate, say), read at start; none when `name` is unset. */
export const namedFile = (name: string): Config.Config<Option.Option<{ readonly path: string; readonly content: string }>> =>
  setValue(name).pipe(Config.mapOrFail((value) => {
    if (Option.isNone(value)) return Either.right(Option.none())
    const path = value.value.trim()
    return Either.map(readNamedFile(name, path), (content) => Option.some({ path, content }))
  }))

/**
 * Environment variables with defaults, each validated to one clear line
 * ("PORT must be an integer from 1 to 65535 (got "abc")") that names the variable and what it expects;
 * `show` undefined echoes nothing of the value.
 *
 * Not `Config.port` / `Config.integer` / `Config.literal` / `Config.validate` / `Schema.Config`: their
 * messages name neither the variable nor the range ("Expected a network port value but received
 * "abc""), `validate`'s cannot show the value, `Schema.Config`'s span lines, and a blank variable is
 * no default to them (`Config.integer` reads "" as 0), where a compose file leaves one blank to unset it.
 */
const variable = <A>(
  name: string,
  fallback: A,
  expects: string,
  parse: (raw: string) => A | undefined,
  show: (raw: string) => string | undefined = (raw) => raw,
  source: Config.Config<Option.Option<string>> = setValue(name)
): Config.Config<A> =>
  source.pipe(
    Config.mapOrFail((raw) => {
      if (Option.isNone(raw)) return Either.right(fallback)
      const parsed = parse(raw.value.trim())
      if (parsed !== undefined) return Either.right(parsed)
      const shown = show(raw.value)
      return Either.left(
        ConfigError.InvalidData([name], `${name} must be ${expects}${shown === undefined ? "" : ` (got ${JSON.stringify(shown)})`}`)
      )
    })
  )

export const integer = (name: string, fallback: number, range: { readonly min: number; readonly max: number }) =>
  variable(name, fallback, `an integer from ${range.min} to ${range.max}`, (raw) => {
    const value = /^-?\d+$/.test(raw) ? Number(raw) : NaN
    return Number.isSafeInteger(value) && value >= range.min && value <= range.max ? value : undefined
  })

export const port = (name: string, fallback: number) => integer(name, fallback, { min: 1, max: 65535 })

export const probability = (name: string, fallback: number) =>
  variable(name, fallback, "a number from 0 to 1", (raw) => {
    const value = /^\d*\.?\d+$/.test(raw) ? Number(raw) : NaN
    return value >= 0 && value <= 1 ? value : undefined
  })

export const oneOf = <const Choices extends ReadonlyArray<string>>(name: string, choices: Choices, fallback: Choices[number]) =>
  variable(name, fallback, `one of ${choices.join(", ")}`, (raw) =>
    choices.includes(raw) ? (raw as Choices[number]) : undefined)

export const validString = (name: string, fallback: string, expects: string, isValid: (raw: string) => boolean) =>
  variable(name, fallback, expects, (raw) => (isValid(raw) ? raw : undefined))

// RabbitMQ queue names are at most 255 bytes, and the queues beside a queue append at most 16
// (".retry.3600000ms" for the longest retry delay; ".dlq").
const isQueueName = (name: string) => Buffer.byteLength(name) <= 239 && !name.startsWith("amq.")

export const queueName = (name: string, fallback: string) =>
  validString(name, fallback, "a queue name of at most 239 bytes not starting with \"amq.\"", isQueueName)

/** Hides the password of every `scheme://user:password@` in a value that is echoed back. */
const maskPasswords = (raw: string) => raw.replace(/(\/\/[^:/@,]*:)[^@,]*@/g, "$1***@")

/** A comma-separated list of secrets (URLs with passwords), from `NAME` or `NAME_FILE`, echoed masked. */
export const secretList = (name: string, fallback: string, expects: string, isValid: (entry: string) => boolean) =>
  variable(name, fallback, expects, (raw) => {
    const entries = raw.split(",").map((entry) => entry.trim()).filter((entry) => entry !== "")
    return entries.length > 0 && entries.every(isValid) ? entries.join(",") : undefined
  }, maskPasswords, fromFileOr(name)).pipe(Config.map((list) => list.split(",").map((entry) => Redacted.make(entry))))

/** An optional secret, from `NAME` or `NAME_FILE`, never echoed. */
export const secret = (name: string, expects: string, isValid: (value: string) => boolean) =>
  variable<Option.Option<Redacted.Redacted<string>>>(
    name,
    Option.none(),
    expects,
    (raw) => (isValid(raw) ? Option.some(Redacted.make(raw)) : undefined),
    () => undefined,
    fromFileOr(name)
  )

/** The one line to print for a configuration error: every variable at fault, none of their secrets. */
export const describeConfigError = (error: ConfigError.ConfigError): string => {
  const lines = new Set<string>()
  const collect = (e: ConfigError.ConfigError): void => {
    switch (e._op) {
      case "And":
      case "Or":
        collect(e.left)
        collect(e.right)
        return
      case "InvalidData":
      case "MissingData":
      case "SourceUnavailable":
      case "Unsupported":
        lines.add(e.message)
    }
  }
  collect(error)
  return `Invalid configuration: ${[...lines].join("; ")}`
}
