import { describe, expect, it } from "@effect/vitest"
import { readFileSync } from "node:fs"
import { parse } from "yaml"

/**
 * No Docker engine runs here, so the cluster compose file is checked for what it promises rather
 * than run: three RabbitMQ nodes that form one cluster by themselves, PostgreSQL, and two replicas
 * of each service spread over the nodes.
 */

interface Service {
  image?: string
  build?: string
  hostname?: string
  command?: Array<string>
  ports?: Array<string>
  environment?: Record<string, string>
  depends_on?: Record<string, { condition: string }>
  configs?: Array<{ source: string; target: string; mode?: number; uid?: string }>
  healthcheck?: { test: Array<string> }
}

// YAML 1.1, as Docker Compose reads it: merge keys (`<<:`), and `0400` is octal.
const compose = parse(readFileSync("docker-compose.cluster.yml", "utf8"), { version: "1.1" }) as {
  services: Record<string, Service>
  configs: Record<string, { content: string }>
}

const NODES = ["rabbitmq-1", "rabbitmq-2", "rabbitmq-3"]
const ORDER_REPLICAS = ["order-service-1", "order-service-2"]
const NOTIFICATION_REPLICAS = ["notification-service-1", "notification-service-2"]

const service = (name: string) => {
  const found = compose.services[name]
  expect(found, `service ${name}`).toBeDefined()
  return found!
}

const amqpHosts = (name: string) => service(name).environment!["AMQP_URL"]!.split(",").map((url) => new URL(url).hostname)

describe("docker-compose.cluster.yml", () => {
  it("runs three RabbitMQ 4 nodes that form one cluster by themselves, with one Erlang cookie", () => {
    const conf = compose.configs["rabbitmq-conf"]!.content
    expect(conf).toMatch(/^cluster_formation\.peer_discovery_backend = classic_config$/m)
    expect(conf).toMatch(/^cluster_partition_handling = pause_minority$/m)
    for (const [index, node] of NODES.entries()) {
      const s = service(node)
      expect(s.image).toMatch(/^rabbitmq:4[.\d]*-management/)
      // The node name is rabbit@<hostname>, and every node lists every other by that name.
      expect(s.hostname).toBe(node)
      expect(conf).toContain(`cluster_formation.classic_config.nodes.${index + 1} = rabbit@${node}`)
      expect(s.configs).toEqual(expect.arrayContaining([
        expect.objectContaining({ source: "rabbitmq-conf", target: "/etc/rabbitmq/rabbitmq.conf" }),
        expect.objectContaining({ source: "erlang-cookie", target: "/var/lib/rabbitmq/.erlang.cookie", mode: 0o400 })
      ]))
      expect(s.healthcheck?.test.join(" ")).toContain("rabbitmq-diagnostics")
    }
    expect(compose.configs["erlang-cookie"]!.content.length).toBeGreaterThanOrEqual(20)
    // Each node's AMQP port and UI on a host port of its own.
    const published = NODES.flatMap((node) => service(node).ports ?? []).map((port) => port.split(":")[0])
    expect(new Set(published).size).toBe(published.length)
  })

  it("runs two order-service replicas on one PostgreSQL store, each started once the cluster and the store are healthy", () => {
    expect(service("postgres").image).toMatch(/^postgres:\d+/)
    const urls = ORDER_REPLICAS.map((name) => service(name).environment!["DATABASE_URL"])
    expect(urls[0]).toMatch(/^postgres:\/\/[^@]+@postgres:5432\/\w+$/)
    expect(urls[1]).toBe(urls[0])
    for (const name of ORDER_REPLICAS) {
      expect(service(name).command).toContain("dist/order/main.mjs")
      expect(Object.keys(service(name).depends_on ?? {}).sort()).toEqual([...NODES, "postgres"].sort())
    }
  })

  it("runs two notification services, each started once the cluster is healthy", () => {
    for (const name of NOTIFICATION_REPLICAS) {
      expect(service(name).command).toContain("dist/notification/main.mjs")
      expect(Object.keys(service(name).depends_on ?? {}).sort()).toEqual(NODES)
      for (const node of NODES) expect(service(name).depends_on![node]).toEqual({ condition: "service_healthy" })
    }
  })

  it("gives every service all three nodes, in another order for each, so connections spread over the cluster", () => {
    const replicas = [...ORDER_REPLICAS, ...NOTIFICATION_REPLICAS]
    for (const name of replicas) expect([...amqpHosts(name)].sort()).toEqual(NODES)
    const firstNodes = replicas.map((name) => amqpHosts(name)[0])
    expect(new Set(firstNodes).size).toBeGreaterThanOrEqual(3)
    const published = replicas.flatMap((name) => service(name).ports ?? []).map((port) => port.split(":")[0])
    expect(new Set(published).size).toBe(published.length)
  })
})
