import { createServer, type IncomingMessage } from "node:http"
import { Effect } from "effect"

/**
 * Reads one sample from Prometheus text: `name{labels} value`. Labels must match exactly, in the
 * order the exposition prints them; 0 when the series is absent would hide a missing metric, so
 * absence is `undefined`.
 */
export const sampleValue = (text: string, name: string, labels: Record<string, string> = {}): number | undefined => {
  const labelText = Object.entries(labels).map(([key, value]) => `${key}="${value}"`).join(",")
  const series = labelText === "" ? name : `${name}{${labelText}}`
  for (const line of text.split("\n")) {
    if (line.startsWith(series + " ")) return Number(line.slice(series.length + 1).trim().split(" ")[0])
  }
  return undefined
}

/** Every `# TYPE` line as name -> type. */
export const metricTypes = (text: string): Record<string, string> =>
  Object.fromEntries(
    text.split("\n").filter((line) => line.startsWith("# TYPE ")).map((line) => {
      const [, , name, type] = line.split(" ")
      return [name!, type!]
    })
  )

export interface ReceivedSpan {
  readonly serviceName: string
  readonly name: string
  readonly kind: number
  readonly traceId: string
  readonly spanId: string
  readonly parentSpanId: string | undefined
  readonly attributes: Record<string, unknown>
}

export interface OtlpRequest {
  readonly path: string
  readonly contentType: string
  readonly body: Buffer
}

const attributeValue = (value: Record<string, unknown>): unknown =>
  value.stringValue ?? value.boolValue ?? (value.intValue !== undefined ? Number(value.intValue) : undefined) ??
    value.doubleValue

/**
 * A small OTLP/HTTP receiver: answers every POST 200 and keeps the spans of JSON-encoded
 * `/v1/traces` requests (and every raw request). Closed when the scope closes.
 */
export const otlpReceiver = Effect.acquireRelease(
  Effect.async<{
    readonly url: string
    readonly spans: Array<ReceivedSpan>
    readonly requests: Array<OtlpRequest>
    close: () => Promise<void>
  }>((resume) => {
    const spans: Array<ReceivedSpan> = []
    const requests: Array<OtlpRequest> = []
    const server = createServer((request: IncomingMessage, response) => {
      const chunks: Array<Buffer> = []
      request.on("data", (chunk: Buffer) => chunks.push(chunk))
      request.on("end", () => {
        const body = Buffer.concat(chunks)
        const contentType = String(request.headers["content-type"] ?? "")
        requests.push({ path: request.url ?? "", contentType, body })
        if (request.url === "/v1/traces" && contentType.includes("json")) {
          const data = JSON.parse(body.toString("utf8")) as {
            resourceSpans: Array<{
              resource: { attributes: Array<{ key: string; value: Record<string, unknown> }> }
              scopeSpans: Array<{ spans: Array<Record<string, any>> }>
            }>
          }
          for (const resourceSpans of data.resourceSpans) {
            const serviceName = String(
              attributeValue(resourceSpans.resource.attributes.find((a) => a.key === "service.name")?.value ?? {})
            )
            for (const scope of resourceSpans.scopeSpans) {
              for (const span of scope.spans) {
                spans.push({
                  serviceName,
                  name: span.name,
                  kind: span.kind,
                  traceId: span.traceId,
                  spanId: span.spanId,
                  parentSpanId: span.parentSpanId || undefined,
                  attributes: Object.fromEntries(
                    (span.attributes as Array<{ key: string; value: Record<string, unknown> }>).map((a) => [
                      a.key,
                      attributeValue(a.value)
                    ])
                  )
                })
              }
            }
          }
        }
        response.writeHead(200, { "content-type": "application/json" })
        response.end("{}")
      })
    })
    server.listen(0, "127.0.0.1", () => {
      const { port } = server.address() as { port: number }
      resume(Effect.succeed({
        url: `http://127.0.0.1:${port}`,
        spans,
        requests,
        close: () =>
          new Promise<void>((resolve) => {
            server.close(() => resolve())
            server.closeAllConnections()
          })
      }))
    })
  }),
  (receiver) => Effect.promise(() => receiver.close())
)
