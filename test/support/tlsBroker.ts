import { Context, Effect, Layer } from "effect"
import { execFile } from "node:child_process"
import { readFileSync, writeFileSync } from "node:fs"
import type { AddressInfo } from "node:net"
import { join } from "node:path"
import { createServer } from "node:tls"
import { promisify } from "node:util"
import { prepareNode, rabbitNode, removeNode, startNode } from "./rabbitNode"
import { temporaryFolder } from "./services"

/** The TLS suite's node: plain AMQP on 5690 (for rabbitmqctl's sake, no test connects there) and TLS on 5691. */
export const TLS_NODE = rabbitNode("tls", "tls", 5690)
export const TLS_PORT = 5691

/** A loopback address the node also listens on, which the server certificate does not name. */
export const UNNAMED_ADDRESS = "127.0.0.2"

/** The PEM files the test made, by path: what `AMQP_CA_FILE`, `AMQP_CERT_FILE` and `AMQP_KEY_FILE` name. */
export interface Certificates {
  /** The test CA, which signed every certificate below. */
  readonly ca: string
  /** An unrelated CA, which signed none of them. */
  readonly otherCa: string
  /** The broker's: `localhost`, DNS:localhost and IP:127.0.0.1. */
  readonly serverCert: string
  readonly serverKey: string
  /** The same name and key, valid for one day that ended yesterday. */
  readonly expiredServerCert: string
  /** For mutual TLS: CN=test-client. */
  readonly clientCert: string
  readonly clientKey: string
}

const run = promisify(execFile)

/** `openssl ca` signs from this; `req` takes the extensions for the test CA from it. */
const OPENSSL_CONFIG = `
[req]
distinguished_name = dn
prompt = no
[dn]
CN = unused
[ca]
default_ca = test_ca
[test_ca]
database = index.txt
new_certs_dir = .
certificate = ca.pem
private_key = ca.key
serial = serial
default_md = sha256
policy = any_name
unique_subject = no
[any_name]
commonName = supplied
[ca_cert]
basicConstraints = critical,CA:TRUE
keyUsage = critical,keyCertSign,cRLSign
subjectKeyIdentifier = hash
[server_cert]
basicConstraints = CA:FALSE
extendedKeyUsage = serverAuth
subjectAltName = DNS:localhost,IP:127.0.0.1
[client_cert]
basicConstraints = CA:FALSE
extendedKeyUsage = clientAuth
`

/** `openssl ca`'s -startdate/-enddate form, YYYYMMDDHHMMSSZ. */
const asn1Time = (date: Date) => `${date.toISOString().replace(/[-:T]/g, "").slice(0, 14)}Z`

/** Makes the test's CAs and certificates with `openssl` in `folder` (P-256 keys: quick to make). */
export const makeCertificates = async (folder: string): Promise<Certificates> => {
  const openssl = (...args: ReadonlyArray<string>) => run("openssl", args, { cwd: folder, timeout: 60_000 })
  const newKey = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
  writeFileSync(join(folder, "openssl.cnf"), OPENSSL_CONFIG)
  writeFileSync(join(folder, "index.txt"), "")
  writeFileSync(join(folder, "serial"), "01\n")
  const selfSignedCa = (name: string, subject: string) =>
    openssl("req", "-x509", "-config", "openssl.cnf", "-extensions", "ca_cert", ...newKey, "-keyout", `${name}.key`, "-out", `${name}.pem`, "-days", "2", "-subj", subject)
  const request = (name: string, subject: string) =>
    openssl("req", "-new", "-config", "openssl.cnf", ...newKey, "-keyout", `${name}.key`, "-out", `${name}.csr`, "-subj", subject)
  const sign = (csr: string, out: string, extensions: string, validity: ReadonlyArray<string>) =>
    openssl("ca", "-batch", "-notext", "-config", "openssl.cnf", "-extensions", extensions, "-in", `${csr}.csr`, "-out", out, ...validity)
  await selfSignedCa("ca", "/CN=Test CA")
  await selfSignedCa("other-ca", "/CN=Unrelated CA")
  await request("server", "/CN=localhost")
  await request("client", "/CN=test-client")
  await sign("server", "server.pem", "server_cert", ["-days", "2"])
  const day = 24 * 60 * 60 * 1000
  await sign("server", "expired.pem", "server_cert", ["-startdate", asn1Time(new Date(Date.now() - 2 * day)), "-enddate", asn1Time(new Date(Date.now() - day))])
  await sign("client", "client.pem", "client_cert", ["-days", "2"])
  const at = (name: string) => join(folder, name)
  return {
    ca: at("ca.pem"),
    otherCa: at("other-ca.pem"),
    serverCert: at("server.pem"),
    serverKey: at("server.key"),
    expiredServerCert: at("expired.pem"),
    clientCert: at("client.pem"),
    clientKey: at("client.key")
  }
}

/** `amqps://` to the TLS node at `host`; the password is never checked where the handshake fails. */
export const tlsUrl = (host: string, password = "guest") => `amqps://guest:${password}@${host}:${TLS_PORT}`

/**
 * The TLS node, started with certificates of its own making and removed (stopped, its directory
 * deleted) when the scope closes, also when it failed to start. It always verifies a client
 * certificate it is given; `requireClientCertificate` refuses a client without one.
 */
export class TlsBroker extends Context.Tag("test/TlsBroker")<TlsBroker, { readonly certificates: Certificates }>() {
  static readonly layer = (options: { readonly requireClientCertificate: boolean }) =>
    Layer.scoped(
      TlsBroker,
      Effect.gen(function*() {
        const folder = yield* temporaryFolder
        const certificates = yield* Effect.promise(() => makeCertificates(folder))
        yield* Effect.addFinalizer(() => Effect.promise(() => removeNode(TLS_NODE)))
        yield* Effect.promise(async () => {
          // A node a killed run left behind.
          await removeNode(TLS_NODE)
          const inNodeDir = (name: string) => join(TLS_NODE.dir, name)
          await prepareNode(TLS_NODE, {
            extraConfig: [
              `listeners.ssl.local = 127.0.0.1:${TLS_PORT}`,
              `listeners.ssl.unnamed = ${UNNAMED_ADDRESS}:${TLS_PORT}`,
              `ssl_options.cacertfile = ${inNodeDir("ca.pem")}`,
              `ssl_options.certfile = ${inNodeDir("server.pem")}`,
              `ssl_options.keyfile = ${inNodeDir("server.key")}`,
              "ssl_options.verify = verify_peer",
              `ssl_options.fail_if_no_peer_cert = ${options.requireClientCertificate}`
            ],
            files: {
              "ca.pem": readFileSync(certificates.ca, "utf8"),
              "server.pem": readFileSync(certificates.serverCert, "utf8"),
              "server.key": readFileSync(certificates.serverKey, "utf8")
            }
          })
          await startNode(TLS_NODE)
        })
        return { certificates }
      })
    )
}

/**
 * A TLS endpoint of the test's own on a free loopback port, presenting the expired certificate (the
 * node has one certificate, and restarting it with another is slow); closed with the scope. It
 * serves nothing past the handshake, which is all an expired certificate gets to.
 */
export const expiredCertificateEndpoint = (certificates: Certificates) =>
  Effect.acquireRelease(
    Effect.async<{ readonly port: number; readonly close: () => Promise<void> }>((resume) => {
      const server = createServer({
        cert: readFileSync(certificates.expiredServerCert),
        key: readFileSync(certificates.serverKey)
      })
      // The client's refusal ends each handshake.
      server.on("tlsClientError", () => undefined)
      server.listen(0, "127.0.0.1", () =>
        resume(Effect.succeed({
          port: (server.address() as AddressInfo).port,
          close: () => new Promise<void>((resolve) => server.close(() => resolve()))
        })))
    }),
    ({ close }) => Effect.promise(close)
  ).pipe(Effect.map(({ port }) => port))
