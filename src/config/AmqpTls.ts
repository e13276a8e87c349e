import { Config, ConfigError, Either, Option, Redacted } from "effect"
import { X509Certificate } from "node:crypto"
import { createSecureContext } from "node:tls"
import { errorMessage } from "../runtime/describe"
import * as Env from "./Env"

/** What an `amqps://` connection presents and trusts besides Node's defaults; `amqp://` ignores it. */
export interface AmqpTls {
  /** PEM: the CA certificates the broker's certificate must chain to; Node's own CAs when none. */
  readonly ca: Option.Option<string>
  /** PEM: a client certificate and its key, for a broker that asks for one (mutual TLS). */
  readonly client: Option.Option<{ readonly cert: string; readonly key: Redacted.Redacted<string> }>
}

const invalid = (name: string, message: string) => Either.left(ConfigError.InvalidData([name], message))

// Checked at start with Node's own parsers: a wrong file would otherwise only show as every connection failing.
const notACertificate = (pem: string): string | undefined => {
  try {
    new X509Certificate(pem)
    return undefined
  } catch (error) {
    return errorMessage(error)
  }
}

const notAPair = (cert: string, key: string): string | undefined => {
  try {
    createSecureContext({ cert, key })
    return undefined
  } catch (error) {
    return errorMessage(error)
  }
}

/** `AMQP_CA_FILE`, `AMQP_CERT_FILE` and `AMQP_KEY_FILE`: read and checked at start, each unset by default. */
export const AmqpTlsConfig: Config.Config<AmqpTls> = Config.all({
  ca: Env.namedFile("AMQP_CA_FILE"),
  cert: Env.namedFile("AMQP_CERT_FILE"),
  key: Env.namedFile("AMQP_KEY_FILE")
}).pipe(Config.mapOrFail(({ ca, cert, key }): Either.Either<AmqpTls, ConfigError.ConfigError> => {
  if (Option.isSome(cert) !== Option.isSome(key)) {
    const [set, unset] = Option.isSome(cert) ? ["AMQP_CERT_FILE", "AMQP_KEY_FILE"] : ["AMQP_KEY_FILE", "AMQP_CERT_FILE"]
    return invalid(unset, `${unset} must be set with ${set}: a client certificate goes with its key (set both, or neither)`)
  }
  if (Option.isSome(ca)) {
    const problem = notACertificate(ca.value.content)
    if (problem !== undefined) {
      return invalid("AMQP_CA_FILE", `AMQP_CA_FILE names a file that holds no PEM certificate: ${ca.value.path} (${problem})`)
    }
  }
  if (Option.isSome(cert) && Option.isSome(key)) {
    const problem = notAPair(cert.value.content, key.value.content)
    if (problem !== undefined) {
      return invalid(
        "AMQP_CERT_FILE",
        `AMQP_CERT_FILE and AMQP_KEY_FILE must name a PEM certificate and its key: ${cert.value.path}, ${key.value.path} (${problem})`
      )
    }
  }
  return Either.right({
    ca: Option.map(ca, ({ content }) => content),
    client: Option.isSome(cert) && Option.isSome(key)
      ? Option.some({ cert: cert.value.content, key: Redacted.make(key.value.content) })
      : Option.none()
  })
}))
