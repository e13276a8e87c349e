import { createServer, type Server, STATUS_CODES } from "node:http"
import type { Duplex } from "node:stream"

/**
 * The limits of every HTTP server of ours (docs/security.md, HTTP limits).
 * Node enforces them itself, whatever the routes do, so a client that trickles its bytes costs a
 * connection for seconds, not for as long as it likes.
 */

/** A real client sends its headers at once; this leaves room for a slow link and cuts off one that trickles them. */
export const HEADERS_TIMEOUT_MS = 10_000

/** Headers and body together: ample for the largest body we take on a slow link, short for one sent a byte at a time. */
export const REQUEST_TIMEOUT_MS = 20_000

/** Long enough for a client's next request in a burst, short enough that idle connections free their slots soon. */
export const KEEP_ALIVE_TIMEOUT_MS = 5_000

/** How often Node looks for requests past their timeouts; its default (30 s) would let them overrun by that much. */
export const CONNECTIONS_CHECKING_INTERVAL_MS = 1_000

/** Node's default, made explicit: our own headers are small, and a browser's cookies on /docs still fit. */
export const MAX_HEADER_BYTES = 16 * 1024

/**
 * High enough that a burst of idle connections does not fill it before the headers timeout closes
 * them; past it Node closes new connections unanswered, sparing the descriptors the store and the
 * broker need (keep `ulimit -Hn` above it).
 */
export const MAX_CONNECTIONS = 10_000

/** A Node HTTP server with the limits above, answering what Node refuses itself with JSON. */
export const createLimitedServer = (): Server => {
  const server = createServer({
    headersTimeout: HEADERS_TIMEOUT_MS,
    requestTimeout: REQUEST_TIMEOUT_MS,
    keepAliveTimeout: KEEP_ALIVE_TIMEOUT_MS,
    connectionsCheckingInterval: CONNECTIONS_CHECKING_INTERVAL_MS,
    maxHeaderSize: MAX_HEADER_BYTES
  })
  server.maxConnections = MAX_CONNECTIONS
  server.on("clientError", answerClientError)
  return server
}

/** A complete HTTP/1.1 answer with a JSON error body, for writing straight to a socket. */
const rawJsonAnswer = (status: number, body: { readonly _tag: string; readonly message: string }) => {
  const json = JSON.stringify(body)
  return Buffer.from(
    `HTTP/1.1 ${status} ${STATUS_CODES[status]}\r\n` +
      "content-type: application/json\r\n" +
      `content-length: ${Buffer.byteLength(json)}\r\n` +
      "connection: close\r\n\r\n" +
      json,
    "latin1"
  )
}

const requestTimeout = rawJsonAnswer(408, {
  _tag: "RequestTimeout",
  message: `The request was not received in time: headers within ${HEADERS_TIMEOUT_MS / 1000} s, ` +
    `the whole request within ${REQUEST_TIMEOUT_MS / 1000} s`
})
const headersTooLarge = rawJsonAnswer(431, {
  _tag: "RequestHeaderFieldsTooLarge",
  message: `The request line and headers are over the limit of ${MAX_HEADER_BYTES} bytes`
})
const chunkExtensionsTooLarge = rawJsonAnswer(413, {
  _tag: "PayloadTooLarge",
  message: "The request's chunk extensions are too large"
})
const malformedRequest = rawJsonAnswer(400, { _tag: "MalformedRequest", message: "The request is not valid HTTP/1.1" })

/** Node's own answers for these (the same statuses) have no body. */
const answerFor = (code: string | undefined) => {
  switch (code) {
    case "ERR_HTTP_REQUEST_TIMEOUT":
      return requestTimeout
    case "HPE_HEADER_OVERFLOW":
      return headersTooLarge
    case "HPE_CHUNK_EXTENSIONS_OVERFLOW":
      return chunkExtensionsTooLarge
    default:
      return malformedRequest
  }
}

/**
 * What Node does by default for a request it cannot take (a timeout, oversized headers, bad HTTP),
 * with a JSON body: answer unless the socket is gone or an answer has begun on it, then close it.
 */
const answerClientError = (error: Error & { readonly code?: string }, socket: Duplex) => {
  // Node's own test: bytes of ours written into the middle of an answer would corrupt it.
  const answering = (socket as { readonly _httpMessage?: { readonly headersSent: boolean } | null })._httpMessage
  if (error.code !== "ECONNRESET" && socket.writable && answering?.headersSent !== true) {
    socket.write(answerFor(error.code))
  }
  socket.destroy(error)
}
