import { Config, ConfigError, Either, Redacted } from "effect"

/**
 * Environment variables with defaults, each validated to one clear line
 * ("PORT must be an integer from 1 to 65535 (got "abc")") that names the variable and what it expects.
 */
const variable = <A>(
  name: string,
  fallback: A,
  expects: string,
  parse: (raw: string) => A | undefined,
  show: (raw: string) => string = (raw) => raw
): Config.Config<A> =>
  Config.string(name).pipe(
    Config.option,
    Config.mapOrFail((raw) => {
      if (raw._tag === "None" || raw.value.trim() === "") return Either.right(fallback)
      const parsed = parse(raw.value.trim())
      return parsed === undefined
        ? Either.left(ConfigError.InvalidData([name], `${name} must be ${expects} (got ${JSON.stringify(show(raw.value))})`))
        : Either.right(parsed)
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

export const redactedList = (name: string, fallback: string, expects: string, isValid: (entry: string) => boolean) =>
  variable(name, fallback, expects, (raw) => {
    const entries = raw.split(",").map((entry) => entry.trim()).filter((entry) => entry !== "")
    return entries.length > 0 && entries.every(isValid) ? entries.join(",") : undefined
  }, maskPasswords).pipe(Config.map((list) => list.split(",").map((entry) => Redacted.make(entry))))

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
