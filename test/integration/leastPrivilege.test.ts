import * as SqlClient from "@effect/sql/SqlClient"
import { PgClient } from "@effect/sql-pg"
import { describe, expect, layer } from "@effect/vitest"
import * as amqp from "amqplib"
import { Context, Duration, Effect, Layer, Redacted } from "effect"
import { randomUUID } from "node:crypto"
import { join } from "node:path"
import { readinessBody, startNotificationService, startOrderService, until } from "../support/faultRig"
import { freePort, runTool, type ServiceProcess, spawnService } from "../support/processes"
import { prepareNode, rabbitmqctlOn, rabbitNode, removeLeftoverDirectories, removeNode, startNode } from "../support/rabbitNode"
import { temporaryFolder } from "../support/services"

/**
 * The services, the dlq tool and `npm run topology`, each as a RabbitMQ user with only the
 * permissions docs/security.md's "Least privilege" gives it, on a private node (users and
 * permissions are the node's, so the shared broker's are never touched), with the default queue
 * names; and the order service on PostgreSQL as roles with only docs/security.md's grants.
 */

const NODE = rabbitNode("privilege", "lp", 5692)
const VHOST = "least_privilege"

const COMMAND_QUEUE = "send_notification_command"
const EVENTS_QUEUE = "order_service.notification_events"
/** With 3 attempts: the first failure is requeued at once, the second waits in this delay queue, the third is the last. */
const RETRY = { NOTIFICATION_MAX_ATTEMPTS: 3, NOTIFICATION_RETRY_DELAY_MS: 200 }
const DELAY_QUEUE = `${COMMAND_QUEUE}.retry.200ms`

/** configure, write, read: as docs/security.md's `rabbitmqctl set_permissions` lines give them. */
const PERMISSIONS = {
  order_service: ["^$", "^(amq\\.default|order_service\\.notification_events)$", "^(order_service\\.notification_events|notification\\.events)$"],
  notification_service: ["^$", "^(amq\\.default|notification\\.events)$", "^send_notification_command$"],
  dlq_tool: ["^$", "^amq\\.default$", "^send_notification_command\\.dlq$"],
  topology_setup: [
    "^(send_notification_command(\\.dlq|\\.retry\\.[0-9]+ms)?|notification\\.events|order_service\\.notification_events(\\.dlq)?)$",
    "^(amq\\.default|order_service\\.notification_events)$",
    "^(send_notification_command(\\.retry\\.[0-9]+ms)?|notification\\.events|order_service\\.notification_events)$"
  ]
} as const
type User = keyof typeof PERMISSIONS

const ctl = (...args: ReadonlyArray<string>) => Effect.promise(() => rabbitmqctlOn(NODE, ...args))

/** The private node with a vhost of its own and the four users, each with its password; all removed with the layer. */
class PrivilegeBroker extends Context.Tag("test/PrivilegeBroker")<PrivilegeBroker, {
  readonly urlOf: (user: User | "guest") => string
}>() {
  static readonly layer = Layer.scoped(
    PrivilegeBroker,
    Effect.gen(function*() {
      yield* Effect.acquireRelease(
        Effect.promise(async () => {
          // A node a killed run left behind.
          await removeNode(NODE)
          removeLeftoverDirectories("privilege")
          await prepareNode(NODE)
          await startNode(NODE)
        }),
        () => Effect.promise(() => removeNode(NODE))
      )
      yield* Effect.acquireRelease(ctl("add_vhost", VHOST), () => Effect.orDie(ctl("delete_vhost", VHOST)))
      // guest stands for the administrator: the test's own look at the broker.
      yield* ctl("set_permissions", "-p", VHOST, "guest", ".*", ".*", ".*")
      const passwords = new Map<string, string>([["guest", "guest"]])
      for (const [user, [configure, write, read]] of Object.entries(PERMISSIONS)) {
        const password = randomUUID()
        yield* Effect.acquireRelease(ctl("add_user", user, password), () => Effect.orDie(ctl("delete_user", user)))
        yield* ctl("set_permissions", "-p", VHOST, user, configure, write, read)
        passwords.set(user, password)
      }
      return { urlOf: (user) => `amqp://${user}:${passwords.get(user)}@127.0.0.1:${NODE.amqpPort}/${VHOST}` }
    })
  )
}


/** The topology, created as the setup user with the services' settings. */
const createTopology = Effect.gen(function*() {
  const { urlOf } = yield* PrivilegeBroker
  const run = yield* runTool("topology", [], { AMQP_URL: urlOf("topology_setup"), ...stringValues(RETRY) })
  expect(run.code, run.stderr).toBe(0)
  return run
})

const stringValues = (values: Record<string, string | number>) =>
  Object.fromEntries(Object.entries(values).map(([key, value]) => [key, String(value)]))

/** The messages a service logged (LOG_FORMAT=json). */
const messagesOf = (service: Pick<ServiceProcess, "lines">) =>
  service.lines.flatMap((line) => {
    try {
      const message = (JSON.parse(line) as { message?: unknown }).message
      return typeof message === "string" ? [message] : []
    } catch {
      return []
    }
  })

const FALLBACK = /^Not allowed to declare (.+); checked that they exist instead$/

/** What the service's fallback lines named as checked instead of declared. */
const checkedInstead = (service: Pick<ServiceProcess, "lines">) =>
  new Set(messagesOf(service).flatMap((message) => FALLBACK.exec(message)?.[1]?.split(", ") ?? []))

type Json = Record<string, any>

const postOrder = (port: number) =>
  Effect.promise(async () => {
    const response = await fetch(`http://127.0.0.1:${port}/orders`, {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: JSON.stringify({ userId: 42 })
    })
    return { status: response.status, body: (await response.json()) as Json }
  })

const getOrder = (port: number, orderId: string) =>
  Effect.promise(() => fetch(`http://127.0.0.1:${port}/orders/${orderId}`).then((response) => response.json() as Promise<Json>))

const orderUntil = (port: number, orderId: string, status: string) =>
  Effect.zipRight(
    until(getOrder(port, orderId), (order) => order["status"] === status, { what: `order ${orderId} to be ${status}` }),
    getOrder(port, orderId)
  )

/** Connects as `user` (the test's own connection, closed with the scope). */
const connectAs = (url: string) =>
  Effect.acquireRelease(
    Effect.promise(async () => {
      const connection = await amqp.connect(url)
      connection.on("error", () => undefined)
      return connection
    }),
    (connection) => Effect.promise(() => connection.close().catch(() => undefined))
  )

/**
 * Runs one operation on a channel of its own (a refusal closes it): "ok", or the broker's reply
 * code and text.
 */
const attempt = (connection: amqp.ChannelModel, operation: (channel: amqp.Channel) => Promise<unknown>) =>
  Effect.promise(async () => {
    const channel = await connection.createChannel()
    channel.on("error", () => undefined)
    try {
      await operation(channel)
      await channel.close()
      return "ok"
    } catch (error) {
      return `${(error as { code?: number }).code} ${(error as Error).message}`
    }
  })

const refusal = (resource: "queue" | "exchange", name: string, user: User) =>
  new RegExp(`^403 .*ACCESS_REFUSED - access to ${resource} '${name.replace(/\./g, "\\.")}' in vhost '${VHOST}' refused for user '${user}'`)

describe("least privilege: every user has only the permissions docs/security.md gives it", () => {
  layer(PrivilegeBroker.layer, { timeout: "3 minutes", excludeTestServices: true })("a private node with the four users", (it) => {
    it.scoped("an order goes through, is retried through a delay queue, dead-lettered, replayed by the dlq tool's user and notified; each user is refused what it must not do", () =>
      Effect.gen(function*() {
        const { urlOf } = yield* PrivilegeBroker
        const folder = yield* temporaryFolder
        const orderEnv = { AMQP_URL: urlOf("order_service"), ORDER_EVENTS_QUEUE: EVENTS_QUEUE, DATABASE_URL: join(folder, "orders.db") }
        const notificationEnv = { AMQP_URL: urlOf("notification_service"), ...RETRY }

        // Before the topology exists: the order service may not create it, so it waits, and what it
        // accepts waits in its outbox.
        const port = yield* freePort
        const orders = yield* spawnService("order/main.ts", { COMMAND_QUEUE, LOG_LEVEL: "debug", PORT: port, ...orderEnv })
        yield* until(Effect.sync(() => messagesOf(orders)), (messages) => messages.some((m) => m.includes("does not exist, and this user may not declare it")), {
          what: "the order service to say the topology is missing"
        })
        expect((yield* readinessBody(port)).broker).toBe("down")
        const accepted = yield* postOrder(port)
        expect(accepted.status).toBe(201)
        const orderId: string = accepted.body["order"]["orderId"]
        expect((yield* getOrder(port, orderId))["status"]).toBe("accepted")

        const setup = yield* createTopology
        expect(setup.stdout.trimEnd().split("\n")).toEqual([
          `Declared queue "${COMMAND_QUEUE}.dlq"`,
          `Declared queue "${COMMAND_QUEUE}"`,
          `Declared queue "${DELAY_QUEUE}"`,
          `Declared exchange "notification.events"`,
          `Declared queue "${EVENTS_QUEUE}.dlq"`,
          `Declared queue "${EVENTS_QUEUE}"`,
          `Declared binding of "${EVENTS_QUEUE}" to "notification.events"`
        ])
        yield* until(readinessBody(port), (body) => body.broker === "up", { what: "the order service's publisher once the topology exists" })
        yield* orderUntil(port, orderId, "queued")
        expect(checkedInstead(orders)).toEqual(new Set([
          `queue "${COMMAND_QUEUE}.dlq"`,
          `queue "${COMMAND_QUEUE}"`,
          `exchange "notification.events"`,
          `queue "${EVENTS_QUEUE}.dlq"`,
          `queue "${EVENTS_QUEUE}"`
        ]))

        // A notification service whose every send fails: attempt 1 requeued, attempt 2 through the
        // delay queue, attempt 3 the last, dead-lettered; the order fails.
        yield* Effect.scoped(Effect.gen(function*() {
          const failing = yield* startNotificationService(COMMAND_QUEUE, { ...notificationEnv, NOTIFICATION_FAILURE_RATE: 1 })
          expect(checkedInstead(failing)).toEqual(new Set([
            `queue "${COMMAND_QUEUE}.dlq"`,
            `queue "${COMMAND_QUEUE}"`,
            `queue "${DELAY_QUEUE}"`,
            `exchange "notification.events"`
          ]))
          const failed = yield* orderUntil(port, orderId, "failed")
          expect(failed["failure"]).toMatchObject({ attempts: 3 })
          // The event goes out before the command is moved to the dead-letter queue, and logged after.
          const deadLettered = /^Dead-lettered: .*; gave up after 3 attempts$/
          yield* until(Effect.sync(() => messagesOf(failing)), (messages) => messages.some((m) => deadLettered.test(m)), {
            what: "the notification service to dead-letter the command"
          })
          const messages = messagesOf(failing)
          expect(messages.filter((m) => m.startsWith("Send failed, requeued: "))).toHaveLength(1)
          expect(messages.filter((m) => /^Send failed, retrying in \d+ms: .* \(attempt 2\)$/.test(m))).toHaveLength(1)
          expect(messages.filter((m) => deadLettered.test(m))).toHaveLength(1)
        }))

        const dlqEnv = { AMQP_URL: urlOf("dlq_tool"), COMMAND_QUEUE }
        const listed = yield* runTool("dlq", ["list", "--json"], dlqEnv)
        expect(listed.code, listed.stderr).toBe(0)
        expect(JSON.parse(listed.stdout)).toMatchObject([{ orderId, validCommand: true, attempts: 3, originalQueue: COMMAND_QUEUE }])

        // Replayed by the dlq tool's user to a notification service that works: the order ends notified.
        yield* startNotificationService(COMMAND_QUEUE, notificationEnv)
        const replayed = yield* runTool("dlq", ["replay", "--all"], dlqEnv)
        expect(replayed.code, replayed.stderr).toBe(0)
        expect(replayed.stdout).toContain(orderId)
        expect(yield* orderUntil(port, orderId, "notified")).toMatchObject({ status: "notified", notifications: 1 })
        const relisted = yield* runTool("dlq", ["list", "--json"], dlqEnv)
        expect(JSON.parse(relisted.stdout)).toEqual([])

        // What each user must not do.
        const asOrderService = yield* connectAs(urlOf("order_service"))
        expect(yield* attempt(asOrderService, (ch) => ch.consume(COMMAND_QUEUE, () => undefined))).toMatch(refusal("queue", COMMAND_QUEUE, "order_service"))
        expect(yield* attempt(asOrderService, (ch) => ch.get(COMMAND_QUEUE))).toMatch(refusal("queue", COMMAND_QUEUE, "order_service"))
        expect(yield* attempt(asOrderService, (ch) => ch.deleteQueue(COMMAND_QUEUE))).toMatch(refusal("queue", COMMAND_QUEUE, "order_service"))

        const asNotificationService = yield* connectAs(urlOf("notification_service"))
        for (const queue of [COMMAND_QUEUE, `${COMMAND_QUEUE}.dlq`, DELAY_QUEUE, EVENTS_QUEUE, `${EVENTS_QUEUE}.dlq`]) {
          expect(yield* attempt(asNotificationService, (ch) => ch.deleteQueue(queue))).toMatch(refusal("queue", queue, "notification_service"))
        }
        expect(yield* attempt(asNotificationService, (ch) => ch.deleteExchange("notification.events"))).toMatch(
          refusal("exchange", "notification.events", "notification_service")
        )

        const asDlqTool = yield* connectAs(urlOf("dlq_tool"))
        expect(yield* attempt(asDlqTool, (ch) => ch.consume(COMMAND_QUEUE, () => undefined))).toMatch(refusal("queue", COMMAND_QUEUE, "dlq_tool"))
        expect(yield* attempt(asDlqTool, (ch) => ch.get(COMMAND_QUEUE))).toMatch(refusal("queue", COMMAND_QUEUE, "dlq_tool"))
        for (const queue of [COMMAND_QUEUE, `${COMMAND_QUEUE}.dlq`]) {
          expect(yield* attempt(asDlqTool, (ch) => ch.deleteQueue(queue))).toMatch(refusal("queue", queue, "dlq_tool"))
        }

        // Nothing was deleted.
        const asAdmin = yield* connectAs(urlOf("guest"))
        for (const queue of [COMMAND_QUEUE, `${COMMAND_QUEUE}.dlq`, DELAY_QUEUE, EVENTS_QUEUE, `${EVENTS_QUEUE}.dlq`]) {
          expect(yield* attempt(asAdmin, (ch) => ch.checkQueue(queue)), queue).toBe("ok")
        }
        expect(yield* attempt(asAdmin, (ch) => ch.checkExchange("notification.events"))).toBe("ok")
      }), 240_000)

    it.scoped("a user that may configure (guest) still has the services declare everything themselves, with no fallback", () =>
      Effect.gen(function*() {
        const { urlOf } = yield* PrivilegeBroker
        const queue = `lp.guest.${randomUUID().slice(0, 8)}`
        const env = { AMQP_URL: urlOf("guest"), ...RETRY }
        const orders = yield* startOrderService(queue, { ...env, DATABASE_URL: join(yield* temporaryFolder, "orders.db") })
        const notifications = yield* startNotificationService(queue, env)
        const accepted = yield* postOrder(orders.port)
        expect(yield* orderUntil(orders.port, accepted.body["order"]["orderId"], "notified")).toMatchObject({ notifications: 1 })
        expect(checkedInstead(orders)).toEqual(new Set())
        expect(checkedInstead(notifications)).toEqual(new Set())
        const asAdmin = yield* connectAs(urlOf("guest"))
        for (const name of [queue, `${queue}.dlq`, `${queue}.retry.200ms`, `${queue}.events`, `${queue}.events.dlq`]) {
          expect(yield* attempt(asAdmin, (ch) => ch.checkQueue(name)), name).toBe("ok")
        }
      }), 120_000)

    it.scoped("on PostgreSQL: the migrator role's first start creates the tables; the service's role, with only DML grants, then runs the service", () =>
      Effect.gen(function*() {
        const { urlOf } = yield* PrivilegeBroker
        yield* createTopology
        const suffix = randomUUID().slice(0, 8)
        const schema = `lp_orders_${suffix}`
        const migrator = `lp_migrator_${suffix}`
        const runtime = `lp_service_${suffix}`
        const adminUrl = process.env.TEST_DATABASE_URL ?? "postgres://postgres@127.0.0.1:5432/test"
        const database = new URL(adminUrl).pathname.slice(1)
        const admin = Context.get(
          yield* Layer.build(PgClient.layer({ url: Redacted.make(adminUrl), connectTimeout: Duration.seconds(5) })),
          SqlClient.SqlClient
        )
        // docs/security.md's grants, with the test's own names (trust authentication: no passwords).
        yield* Effect.acquireRelease(
          Effect.forEach([
            `CREATE ROLE ${migrator} LOGIN`,
            `CREATE ROLE ${runtime} LOGIN`,
            `CREATE SCHEMA ${schema}`,
            `GRANT CONNECT ON DATABASE ${database} TO ${migrator}, ${runtime}`,
            `GRANT USAGE, CREATE ON SCHEMA ${schema} TO ${migrator}`,
            `GRANT USAGE ON SCHEMA ${schema} TO ${runtime}`,
            `ALTER DEFAULT PRIVILEGES FOR ROLE ${migrator} IN SCHEMA ${schema} GRANT SELECT, INSERT, UPDATE, DELETE ON TABLES TO ${runtime}`,
            `ALTER ROLE ${migrator} SET search_path = ${schema}`,
            `ALTER ROLE ${runtime} SET search_path = ${schema}`
          ], (statement) => admin.unsafe(statement), { discard: true }),
          () =>
            Effect.orDie(Effect.forEach([
              `DROP SCHEMA IF EXISTS ${schema} CASCADE`,
              `DROP OWNED BY ${migrator}, ${runtime}`,
              `DROP ROLE ${migrator}, ${runtime}`
            ], (statement) => admin.unsafe(statement), { discard: true }))
        )
        const urlAs = (role: string) => {
          const url = new URL(adminUrl)
          url.username = role
          return url.toString()
        }
        const orderEnv = (role: string) => ({ AMQP_URL: urlOf("order_service"), ORDER_EVENTS_QUEUE: EVENTS_QUEUE, DATABASE_URL: urlAs(role) })

        // The service's role may not create the tables: its first start fails, in one line.
        const tooEarly = yield* spawnService("order/main.ts", { COMMAND_QUEUE, PORT: yield* freePort, ...orderEnv(runtime) })
        expect(yield* tooEarly.exitCode).toBe(1)
        expect(messagesOf(tooEarly).join("\n")).toMatch(/migrations failed on PostgreSQL .*: permission denied for schema/)

        // The first start, as the migrator: the migrations run.
        yield* Effect.scoped(Effect.gen(function*() {
          const first = yield* startOrderService(COMMAND_QUEUE, orderEnv(migrator))
          expect(messagesOf(first)).toContain("Order store migrated (1_create_order_store)")
        }))

        // Every later start, as the service's role: nothing to migrate, and orders are served.
        const orders = yield* startOrderService(COMMAND_QUEUE, orderEnv(runtime))
        expect(messagesOf(orders).filter((m) => m.startsWith("Order store migrated"))).toEqual([])
        yield* startNotificationService(COMMAND_QUEUE, { AMQP_URL: urlOf("notification_service"), ...RETRY })
        const accepted = yield* postOrder(orders.port)
        expect(accepted.status).toBe(201)
        const orderId: string = accepted.body["order"]["orderId"]
        expect(yield* orderUntil(orders.port, orderId, "notified")).toMatchObject({ status: "notified", notifications: 1 })

        // What the service's role may not do: create or drop tables.
        const asService = Context.get(
          yield* Layer.build(PgClient.layer({ url: Redacted.make(urlAs(runtime)), connectTimeout: Duration.seconds(5) })),
          SqlClient.SqlClient
        )
        const [{ count }] = (yield* asService.unsafe(`SELECT count(*)::int AS count FROM orders`)) as unknown as [{ count: number }]
        expect(count).toBe(1)
        const refused = (statement: string) =>
          asService.unsafe(statement).pipe(Effect.flip, Effect.map((error) => String((error.cause as Error | undefined)?.message ?? error.message)))
        expect(yield* refused(`CREATE TABLE ${schema}.intruder (id integer)`)).toMatch(/permission denied for schema/)
        expect(yield* refused(`DROP TABLE orders`)).toMatch(/must be owner of table orders/)
        expect(yield* refused(`ALTER TABLE orders ADD COLUMN intruder integer`)).toMatch(/must be owner of table orders/)
      }), 240_000)
  })
})
