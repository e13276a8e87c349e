import { describe, expect, it } from "@effect/vitest"
import { readFileSync } from "node:fs"
import { parse } from "yaml"
import { bundledEntry, SERVICE_ENTRIES } from "../../scripts/build"

/**
 * No Docker engine runs here, so the compose file is checked for what it promises rather than run:
 * images, published ports, the broker's healthcheck, start order and each service's environment.
 */

interface Service {
  image?: string
  build?: string | { context: string }
  command?: Array<string> | string
  ports?: Array<string>
  environment?: Record<string, string> | Array<string>
  depends_on?: Record<string, { condition: string }> | Array<string>
  healthcheck?: { test: Array<string> | string; interval?: string; retries?: number }
}

const compose = parse(readFileSync("docker-compose.yml", "utf8")) as { services: Record<string, Service> }
const dockerfile = readFileSync("Dockerfile", "utf8")
const dockerignore = readFileSync(".dockerignore", "utf8").split("\n").map((line) => line.trim())

const service = (name: string) => {
  const found = compose.services[name]
  expect(found, `service ${name}`).toBeDefined()
  return found!
}

const environmentOf = (s: Service): Record<string, string> =>
  Array.isArray(s.environment)
    ? Object.fromEntries(s.environment.map((entry) => [entry.slice(0, entry.indexOf("=")), entry.slice(entry.indexOf("=") + 1)]))
    : Object.fromEntries(Object.entries(s.environment ?? {}).map(([k, v]) => [k, String(v)]))

const commandText = (command: Service["command"]) => (Array.isArray(command) ? command.join(" ") : command ?? "")

const services = [
  { name: "order-service", entry: "dist/order/main.mjs", portVariable: "PORT", port: "3000" },
  { name: "notification-service", entry: "dist/notification/main.mjs", portVariable: "NOTIFICATION_HEALTH_PORT", port: "3001" }
] as const

describe("docker-compose.yml", () => {
  it("runs RabbitMQ 4 with the management UI, 5672 and 15672 published as themselves, and a healthcheck", () => {
    const rabbitmq = service("rabbitmq")
    expect(rabbitmq.image).toMatch(/^rabbitmq:4[.\d]*-management/)
    expect(rabbitmq.ports).toEqual(expect.arrayContaining(["5672:5672", "15672:15672"]))
    const test = commandText(rabbitmq.healthcheck?.test)
    expect(test).toMatch(/^CMD(-SHELL)? /)
    expect(test).toMatch(/rabbitmq-diagnostics (-q )?(ping|check_port_connectivity|check_running)/)
  })

  it("runs a tracing backend that accepts OTLP/HTTP, with its UI published", () => {
    const jaeger = service("jaeger")
    expect(jaeger.image).toMatch(/^jaegertracing\/(jaeger|all-in-one):/)
    expect(jaeger.image).not.toMatch(/:latest$/)
    expect(jaeger.ports).toEqual(expect.arrayContaining(["16686:16686"]))
    // Its OTLP/HTTP receiver listens where the services send: every interface, port 4318.
    expect(commandText(jaeger.command)).toContain("receivers.otlp.protocols.http.endpoint=0.0.0.0:4318")
  })


  for (const { entry, name, port, portVariable } of services) {
    it(`builds ${name} from the Dockerfile and starts it once the broker is healthy`, () => {
      const s = service(name)
      expect(s.build === "." || (typeof s.build === "object" && s.build.context === ".")).toBe(true)
      expect(commandText(s.command)).toContain(entry)
      expect(s.ports).toEqual([`${port}:${port}`])
      expect(s.depends_on).toMatchObject({ rabbitmq: { condition: "service_healthy" } })
      expect(commandText(s.healthcheck?.test)).toContain(`127.0.0.1:${port}/health/ready`)
    })

    it(`points ${name} at the broker and at the tracing backend, under its own service name`, () => {
      const env = environmentOf(service(name))
      expect(env).toMatchObject({
        AMQP_URL: "amqp://guest:guest@rabbitmq:5672",
        [portVariable]: port,
        OTEL_EXPORTER_OTLP_ENDPOINT: "http://jaeger:4318",
        OTEL_SERVICE_NAME: name
      })
      expect(["http/protobuf", "http/json"]).toContain(env.OTEL_EXPORTER_OTLP_PROTOCOL ?? "http/protobuf")
      // Every variable set must be one the services read (a typo would be silently ignored).
      for (const variable of Object.keys(env)) {
        expect(variable).toMatch(/^(AMQP_URL|PORT|NOTIFICATION_\w+|COMMAND_QUEUE|LOG_\w+|OTEL_\w+|PUBLISH_TIMEOUT_MS|SHUTDOWN_TIMEOUT_MS)$/)
      }
    })
  }
})

describe("Dockerfile", () => {
  it("builds on the current Node LTS from the lockfile, and runs `npm run build`'s bundles with plain node", () => {
    expect(dockerfile).toMatch(/^FROM node:lts(-[\w-]+)? AS build$/m)
    expect(dockerfile).toMatch(/^RUN npm ci\b/m)
    expect(dockerfile).toMatch(/^COPY package\.json package-lock\.json/m)
    expect(dockerfile).toMatch(/^RUN npm run build$/m)
    // The image itself: the bundles only, node as PID 1, not root.
    expect(dockerfile).toMatch(/^FROM node:lts(-[\w-]+)?$/m)
    expect(dockerfile).toMatch(/^COPY --from=build \/app\/dist \.\/dist$/m)
    expect(dockerfile).toMatch(/^ENTRYPOINT \["node"\]$/m)
    expect(dockerfile).toMatch(/^CMD \[.*"dist\/main\.mjs"\]$/m)
    expect(dockerfile).toMatch(/^USER node$/m)
  })

  it("starts each service with the node flags its npm script uses", () => {
    const { scripts } = JSON.parse(readFileSync("package.json", "utf8")) as { scripts: Record<string, string> }
    // Node's flags: `--flag` or `--flag=value`; `--import tsx` loads the TypeScript loader, not a flag we set.
    const flagsOf = (words: ReadonlyArray<string>) => words.filter((word) => /^--[\w-]+(=\S+)?$/.test(word) && word !== "--import")
    const scriptFlags = (name: string) => flagsOf(scripts[name]!.split(/\s+/))
    // The order service trades some CPU for a smaller heap and a shorter tail; the consumer keeps V8's defaults.
    expect(scriptFlags("start:order")).toEqual(["--single-threaded-gc", "--max-semi-space-size=8", "--heap-growing-percent=50"])
    expect(scriptFlags("start:notification")).toEqual([])
    // Both services in one process (npm start, the image's default) get the order service's.
    for (const name of ["start", "start:built"]) expect(scriptFlags(name), name).toEqual(scriptFlags("start:order"))
    const cmd = JSON.parse(/^CMD (.*)$/m.exec(dockerfile)![1]!) as Array<string>
    expect(flagsOf(cmd)).toEqual(scriptFlags("start"))
    const composeCommand = (name: string) => service(name).command as Array<string>
    expect(flagsOf(composeCommand("order-service"))).toEqual(scriptFlags("start:order"))
    expect(flagsOf(composeCommand("notification-service"))).toEqual(scriptFlags("start:notification"))
  })

  it("bundles, in `npm run build`, exactly the entry points the image and compose file run", () => {
    expect(SERVICE_ENTRIES.map(bundledEntry)).toEqual(["dist/main.mjs", ...services.map(({ entry }) => entry)])
  })

  it("keeps the host's node_modules and the repository's history out of the build context", () => {
    expect(dockerignore).toEqual(expect.arrayContaining(["node_modules", ".git"]))
  })
})
