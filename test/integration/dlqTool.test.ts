import { HttpClient, HttpClientRequest } from "@effect/platform"
import { describe, expect, it } from "@effect/vitest"
import type * as amqp from "amqplib"
import { Effect, Layer } from "effect"
import { commandProperties, encodeCommand, SendNotificationCommand } from "../../src/contracts/SendNotificationCommand"
import { makeOrderId, UserId } from "../../src/domain/Order"
import { countHeader } from "../../src/messaging/FailureStory"
import { declareWorkQueue } from "../../src/messaging/QueueTopology"
import { NotificationFailed, NotificationSender } from "../../src/notification/NotificationSender"
import { AMQP_URL, eventually, queueDepth, testBroker, uniqueQueueName } from "../support/broker"
import { runTool, type ToolRun } from "../support/processes"
import { notificationConsumer, orderService, orderUntil } from "../support/services"

/** Runs `npm run dlq -- ...args` as the operator would, on the test's own command queue; resolves once it has exited. */
const dlq = (queue: string, args: ReadonlyArray<string>, env: Record<string, string> = {}) =>
  runTool("dlq", args, { AMQP_URL, COMMAND_QUEUE: queue, ...env })

const linesOf = (text: string) => text.trimEnd().split("\n")

/** A failure as the contract wants it: one line on stderr, nothing on stdout. */
const expectOneLineFailure = (run: ToolRun, code: number) => {
  expect(run.code, run.stderr).toBe(code)
  expect(run.stdout).toBe("")
  expect(linesOf(run.stderr)).toHaveLength(1)
  expect(run.stderr).not.toMatch(/^\s+at /m)
  return run.stderr.trim()
}

const listJson = (queue: string) =>
  Effect.map(dlq(queue, ["list", "--json"]), (run) => {
    expect(run.code, run.stderr).toBe(0)
    return JSON.parse(run.stdout) as ReadonlyArray<Record<string, any>>
  })

const newCommand = () => new SendNotificationCommand({ orderId: makeOrderId(), userId: UserId.make(42) })

/** The headers our consumer writes when it dead-letters a message. */
const story = (queue: string, failure: { readonly reason: string; readonly attempts: number; readonly at: string }) => ({
  "x-failure-reason": failure.reason,
  "x-attempts": failure.attempts,
  "x-first-failed-at": failure.at,
  "x-last-failed-at": failure.at,
  "x-original-queue": queue
})

const TRACEPARENT = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"

/** The queues as the services declare them, and a confirm channel to put messages in place. */
const deadLetterFixture = (queue: string) =>
  Effect.gen(function*() {
    const { channel, connection } = yield* testBroker(queue)
    yield* declareWorkQueue(channel, queue)
    const confirmChannel = yield* Effect.promise(() => connection.createConfirmChannel())
    const publish = (to: string, content: Buffer, options: amqp.Options.Publish) =>
      Effect.promise(() =>
        new Promise<void>((resolve, reject) =>
          confirmChannel.sendToQueue(to, content, options, (error) => (error ? reject(error) : resolve()))
        )
      )
    const deadLetterQueue = `${queue}.dlq`

    /** A command our consumer gave up on, as it leaves it in the dead-letter queue. */
    const deadLetterCommand = (
      command: SendNotificationCommand,
      failure: { readonly reason: string; readonly attempts: number; readonly at: string }
    ) =>
      publish(deadLetterQueue, encodeCommand(command), {
        ...commandProperties(command.orderId, "test"),
        headers: { traceparent: TRACEPARENT, ...story(queue, failure) }
      })

    const deadLetterPoison = (at: string) =>
      publish(deadLetterQueue, Buffer.from("{\"orderId\": 17"), {
        messageId: "poison-1",
        persistent: true,
        headers: story(queue, { reason: "not a valid SendNotificationCommand (Unexpected end of JSON input)", attempts: 1, at })
      })

    /** A command rejected without requeue by a consumer of the test's own: the broker dead-letters it, with no story. */
    const deadLetterByBroker = (command: SendNotificationCommand) =>
      Effect.gen(function*() {
        yield* publish(queue, encodeCommand(command), commandProperties(command.orderId, "test"))
        const delivered = yield* Effect.promise(() => channel.get(queue, { noAck: false }))
        if (delivered === false) return yield* Effect.dieMessage("the command did not reach its queue")
        const before = (yield* Effect.promise(() => channel.checkQueue(deadLetterQueue))).messageCount
        channel.reject(delivered, false)
        yield* eventually(() => channel.checkQueue(deadLetterQueue), ({ messageCount }) => messageCount === before + 1, {
          what: "the broker's dead-lettering"
        })
      })

    /** Messages ready in a queue (the tool holds none once it has exited). */
    const ready = (name: string) => Effect.promise(() => channel.checkQueue(name)).pipe(Effect.map((ok) => ok.messageCount))

    return { channel, deadLetterQueue, deadLetterCommand, deadLetterPoison, deadLetterByBroker, ready }
  })

const EARLY = "2025-03-01T09:00:00.000Z"
const LATER = "2025-03-01T10:00:00.000Z"

describe("npm run dlq, against the real broker", () => {
  it.scopedLive("list: a table oldest first, a poison message and one the broker dead-lettered included; nothing leaves the queue", () =>
    Effect.gen(function*() {
      const queue = uniqueQueueName("dlqlist")
      const fixture = yield* deadLetterFixture(queue)
      const failed = newCommand()
      const rejected = newCommand()
      // In queue order: the command, the poison message (which failed earlier), the broker's.
      yield* fixture.deadLetterCommand(failed, { reason: "SMTP said no", attempts: 3, at: LATER })
      yield* fixture.deadLetterPoison(EARLY)
      yield* fixture.deadLetterByBroker(rejected)
      const depth = yield* queueDepth(fixture.deadLetterQueue)
      expect(depth).toBe(3)

      const first = yield* dlq(queue, ["list"])
      expect(first.code, first.stderr).toBe(0)
      expect(first.stderr).toBe("")
      const [header, ...rows] = linesOf(first.stdout)
      expect(header).toMatch(/^ORDER ID\s+MESSAGE ID\s+ATTEMPTS\s+FIRST FAILED\s+LAST FAILED\s+REASON$/)
      expect(rows).toHaveLength(4)
      const [poisonRow, failedRow, rejectedRow, summary] = rows as [string, string, string, string]
      // Cells split on the column gaps (two spaces or more; a reason may have single spaces).
      const cells = (row: string) => row.split(/ {2,}/)
      expect(cells(poisonRow)).toEqual([
        "- (not a command)",
        "poison-1",
        "1",
        EARLY,
        EARLY,
        "not a valid SendNotificationCommand (Unexpected end of JSON input)"
      ])
      expect(cells(failedRow)).toEqual([failed.orderId, failed.orderId, "3", LATER, LATER, "SMTP said no"])
      const [rejectedId, rejectedMessageId, attempts, firstDeath, lastDeath, reason] = cells(rejectedRow)
      expect([rejectedId, rejectedMessageId, attempts, reason]).toEqual([
        rejected.orderId,
        rejected.orderId,
        "unknown",
        "rejected (by the broker)"
      ])
      expect(firstDeath).toMatch(/^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.000Z$/)
      expect(lastDeath).toBe(firstDeath)
      // Aligned: every column starts where its header does.
      for (const row of [poisonRow, failedRow, rejectedRow]) {
        expect(row.slice(header!.indexOf("ATTEMPTS"))).toMatch(/^(\d+|unknown) /)
        expect(row.slice(header!.indexOf("FIRST FAILED"))).toMatch(/^\d{4}-\d\d-\d\dT/)
        expect(row.slice(header!.indexOf("LAST FAILED"))).toMatch(/^\d{4}-\d\d-\d\dT/)
        expect(row.slice(header!.indexOf("REASON"))).toMatch(/^(not a valid|SMTP said no|rejected)/)
      }
      expect(summary).toBe(`3 dead-lettered messages in ${fixture.deadLetterQueue} (1 not a valid command)`)

      const second = yield* dlq(queue, ["list"])
      expect(second.stdout).toBe(first.stdout)
      expect(yield* queueDepth(fixture.deadLetterQueue)).toBe(depth)
    }), 120_000)

  it.scopedLive("list --json: one object per message and nothing else on stdout", () =>
    Effect.gen(function*() {
      const queue = uniqueQueueName("dlqjson")
      const fixture = yield* deadLetterFixture(queue)
      const failed = newCommand()
      const rejected = newCommand()
      yield* fixture.deadLetterCommand(failed, { reason: "SMTP said no", attempts: 3, at: LATER })
      yield* fixture.deadLetterPoison(EARLY)
      yield* fixture.deadLetterByBroker(rejected)

      const listed = yield* listJson(queue)
      expect(listed).toHaveLength(3)
      expect(listed[0]).toEqual({
        orderId: null,
        validCommand: false,
        messageId: "poison-1",
        reason: "not a valid SendNotificationCommand (Unexpected end of JSON input)",
        deadLetteredBy: "consumer",
        attempts: 1,
        firstFailedAt: EARLY,
        lastFailedAt: EARLY,
        originalQueue: queue
      })
      expect(listed[1]).toEqual({
        orderId: failed.orderId,
        validCommand: true,
        messageId: failed.orderId,
        reason: "SMTP said no",
        deadLetteredBy: "consumer",
        attempts: 3,
        firstFailedAt: LATER,
        lastFailedAt: LATER,
        originalQueue: queue
      })
      // No story: the broker's own reason and time, and the attempts are not known.
      expect(listed[2]).toMatchObject({
        orderId: rejected.orderId,
        validCommand: true,
        reason: "rejected",
        deadLetteredBy: "broker",
        attempts: null,
        originalQueue: queue
      })
      expect(Date.now() - Date.parse(listed[2]!["lastFailedAt"])).toBeLessThan(10 * 60_000)
      expect(yield* fixture.ready(fixture.deadLetterQueue)).toBe(3)
    }), 120_000)

  it.scopedLive("list --limit N reads the first N and says how many the queue holds; a bad N is one line and exit 2", () =>
    Effect.gen(function*() {
      const queue = uniqueQueueName("dlqlimit")
      const fixture = yield* deadLetterFixture(queue)
      const commands = [newCommand(), newCommand(), newCommand()]
      for (const [index, command] of commands.entries()) {
        yield* fixture.deadLetterCommand(command, { reason: "SMTP said no", attempts: 2, at: `2025-03-01T10:0${index}:00.000Z` })
      }

      const limited = yield* dlq(queue, ["list", "--limit", "2"])
      expect(limited.code, limited.stderr).toBe(0)
      const lines = linesOf(limited.stdout)
      expect(lines).toHaveLength(4)
      expect(lines[1]).toContain(commands[0]!.orderId)
      expect(lines[2]).toContain(commands[1]!.orderId)
      expect(lines[3]).toBe(`showing 2 of 3 dead-lettered commands in ${fixture.deadLetterQueue}`)
      const limitedJson = yield* dlq(queue, ["list", "--limit", "1", "--json"])
      expect((JSON.parse(limitedJson.stdout) as ReadonlyArray<unknown>).map((entry: any) => entry.orderId)).toEqual([
        commands[0]!.orderId
      ])

      const all = yield* dlq(queue, ["list", "--limit", "5"])
      expect(linesOf(all.stdout).at(-1)).toBe(`3 dead-lettered commands in ${fixture.deadLetterQueue}`)

      const badLimits = yield* Effect.forEach(["0", "abc"], (bad) => dlq(queue, ["list", "--limit", bad]), {
        concurrency: 4
      })
      for (const run of badLimits) expect(expectOneLineFailure(run, 2)).toMatch(/^--limit must be a positive integer \(got ".+"\) \(see --help\)$/)
      expect(yield* fixture.ready(fixture.deadLetterQueue)).toBe(3)
    }), 120_000)

  it.scopedLive("replay ORDER_ID: one copy back on the command queue with fresh attempts, its duplicates dropped, the rest left", () =>
    Effect.gen(function*() {
      const queue = uniqueQueueName("dlqreplay")
      const fixture = yield* deadLetterFixture(queue)
      const twice = newCommand()
      const other = newCommand()
      yield* fixture.deadLetterCommand(twice, { reason: "SMTP said no", attempts: 5, at: EARLY })
      yield* fixture.deadLetterCommand(other, { reason: "SMTP said no", attempts: 5, at: LATER })
      yield* fixture.deadLetterCommand(twice, { reason: "SMTP said no", attempts: 5, at: LATER })

      // Upper case is the same UUID.
      const run = yield* dlq(queue, ["replay", twice.orderId.toUpperCase()])
      expect(run.code, run.stderr).toBe(0)
      expect(run.stderr).toBe("")
      expect(linesOf(run.stdout)).toEqual([
        `Replayed 1 command from ${fixture.deadLetterQueue} to ${queue}:`,
        `  ${twice.orderId}  (and dropped 1 duplicate copy once the replay was confirmed)`
      ])

      expect(yield* fixture.ready(queue)).toBe(1)
      const replayed = yield* Effect.promise(() => fixture.channel.get(queue, { noAck: true }))
      if (replayed === false) return expect.unreachable("the replayed command is not in the command queue")
      expect(replayed.content.toString()).toBe(encodeCommand(twice).toString())
      expect(replayed.properties).toMatchObject({
        messageId: twice.orderId,
        type: "SendNotificationCommand",
        contentType: "application/json",
        deliveryMode: 2,
        appId: "test"
      })
      const headers = replayed.properties.headers ?? {}
      // A fresh command for the consumer: no story, no broker counts; its trace context kept.
      for (const name of ["x-failure-reason", "x-attempts", "x-first-failed-at", "x-last-failed-at", "x-original-queue"]) {
        expect(headers[name], name).toBeUndefined()
      }
      expect(countHeader(headers["x-delivery-count"])).toBe(0)
      expect(headers["traceparent"]).toBe(TRACEPARENT)
      expect(Date.now() - Date.parse(String(headers["x-replayed-at"]))).toBeLessThan(60_000)

      expect((yield* listJson(queue)).map((entry) => entry["orderId"])).toEqual([other.orderId])
      expect(yield* queueDepth(fixture.deadLetterQueue)).toBe(1)
    }), 120_000)

  it.scopedLive("replay --all: every valid command, one copy each, and the messages that are not commands stay", () =>
    Effect.gen(function*() {
      const queue = uniqueQueueName("dlqall")
      const fixture = yield* deadLetterFixture(queue)
      const first = newCommand()
      const second = newCommand()
      yield* fixture.deadLetterCommand(first, { reason: "SMTP said no", attempts: 5, at: EARLY })
      yield* fixture.deadLetterPoison(EARLY)
      yield* fixture.deadLetterCommand(second, { reason: "SMTP said no", attempts: 5, at: LATER })
      yield* fixture.deadLetterCommand(first, { reason: "SMTP said no", attempts: 5, at: LATER })

      const run = yield* dlq(queue, ["replay", "--all"])
      expect(run.code, run.stderr).toBe(0)
      expect(linesOf(run.stdout)).toEqual([
        `Replayed 2 commands from ${fixture.deadLetterQueue} to ${queue}:`,
        `  ${first.orderId}  (and dropped 1 duplicate copy once the replay was confirmed)`,
        `  ${second.orderId}`,
        `Left 1 message that is not a valid command in ${fixture.deadLetterQueue} (dlq drop --poison removes them)`
      ])
      expect(yield* fixture.ready(queue)).toBe(2)
      expect((yield* listJson(queue)).map((entry) => entry["messageId"])).toEqual(["poison-1"])

      // Nothing valid left: nothing to do, and that is no error.
      const again = yield* dlq(queue, ["replay", "--all"])
      expect(again.code, again.stderr).toBe(0)
      expect(linesOf(again.stdout)[0]).toBe(`Replayed 0 commands from ${fixture.deadLetterQueue} to ${queue}`)
      expect(yield* fixture.ready(queue)).toBe(2)
    }), 120_000)

  it.scopedLive("replay and drop are all or nothing: an id not in the queue, or not a UUID, is one line, exit 2, and nothing changes", () =>
    Effect.gen(function*() {
      const queue = uniqueQueueName("dlqmissing")
      const fixture = yield* deadLetterFixture(queue)
      const present = newCommand()
      const absent = makeOrderId()
      yield* fixture.deadLetterCommand(present, { reason: "SMTP said no", attempts: 5, at: EARLY })

      const replay = expectOneLineFailure(yield* dlq(queue, ["replay", present.orderId, absent]), 2)
      expect(replay).toBe(`Not in ${fixture.deadLetterQueue}: ${absent}; nothing was replayed`)
      const drop = expectOneLineFailure(yield* dlq(queue, ["drop", absent, present.orderId]), 2)
      expect(drop).toBe(`Not in ${fixture.deadLetterQueue}: ${absent}; nothing was dropped`)
      const [notUuid, truncated] = yield* Effect.all([
        dlq(queue, ["replay", present.orderId, "order-42"]),
        dlq(queue, ["drop", "0190a6c4-8c35"])
      ], { concurrency: 2 })
      expect(expectOneLineFailure(notUuid, 2)).toBe("ORDER_ID must be a UUID, the order's id (got \"order-42\") (see --help)")
      expect(expectOneLineFailure(truncated, 2)).toBe("ORDER_ID must be a UUID, the order's id (got \"0190a6c4-8c35\") (see --help)")

      expect(yield* fixture.ready(queue)).toBe(0)
      expect(yield* queueDepth(fixture.deadLetterQueue)).toBe(1)
      expect((yield* listJson(queue)).map((entry) => entry["orderId"])).toEqual([present.orderId])
    }), 120_000)

  it.scopedLive("drop ORDER_ID removes every copy of the order; drop --poison removes the messages that are not commands", () =>
    Effect.gen(function*() {
      const queue = uniqueQueueName("dlqdrop")
      const fixture = yield* deadLetterFixture(queue)
      const twice = newCommand()
      const kept = newCommand()
      yield* fixture.deadLetterCommand(twice, { reason: "SMTP said no", attempts: 5, at: EARLY })
      yield* fixture.deadLetterCommand(kept, { reason: "SMTP said no", attempts: 5, at: LATER })
      yield* fixture.deadLetterPoison(LATER)
      yield* fixture.deadLetterCommand(twice, { reason: "SMTP said no", attempts: 5, at: LATER })

      const dropped = yield* dlq(queue, ["drop", twice.orderId])
      expect(dropped.code, dropped.stderr).toBe(0)
      expect(linesOf(dropped.stdout)).toEqual([
        `Dropped 2 messages of 1 order from ${fixture.deadLetterQueue}:`,
        `  ${twice.orderId}  (2 copies)`
      ])
      expect((yield* listJson(queue)).map((entry) => entry["messageId"])).toEqual([kept.orderId, "poison-1"])

      const poison = yield* dlq(queue, ["drop", "--poison"])
      expect(poison.code, poison.stderr).toBe(0)
      expect(linesOf(poison.stdout)).toEqual([`Dropped 1 message that was not a valid command from ${fixture.deadLetterQueue}`])
      expect((yield* listJson(queue)).map((entry) => entry["orderId"])).toEqual([kept.orderId])
      expect(yield* fixture.ready(queue)).toBe(0)
      expect(yield* queueDepth(fixture.deadLetterQueue)).toBe(1)
    }), 120_000)

  it.scopedLive("a message given back many times is replaced by a fresh copy, so the broker's delivery limit cannot drop it", () =>
    Effect.gen(function*() {
      const queue = uniqueQueueName("dlqrefresh")
      const fixture = yield* deadLetterFixture(queue)
      const command = newCommand()
      yield* fixture.deadLetterCommand(command, { reason: "SMTP said no", attempts: 5, at: EARLY })
      // Ten looks that each gave it back: the broker counts them in x-delivery-count.
      let seen: amqp.GetMessage | false = false
      for (let look = 0; look < 10; look++) {
        seen = yield* Effect.promise(() => fixture.channel.get(fixture.deadLetterQueue, { noAck: false }))
        if (seen === false) return expect.unreachable("the dead letter is gone")
        fixture.channel.reject(seen, true)
      }
      expect(countHeader((seen as amqp.GetMessage).properties.headers?.["x-delivery-count"])).toBe(9)

      const run = yield* dlq(queue, ["list", "--json"])
      expect(run.code, run.stderr).toBe(0)
      expect(run.stderr).toBe("")
      expect((JSON.parse(run.stdout) as ReadonlyArray<any>).map((entry) => entry.orderId)).toEqual([command.orderId])

      expect(yield* queueDepth(fixture.deadLetterQueue)).toBe(1)
      const refreshed = yield* Effect.promise(() => fixture.channel.get(fixture.deadLetterQueue, { noAck: false }))
      if (refreshed === false) return expect.unreachable("the dead letter is gone")
      const headers = refreshed.properties.headers ?? {}
      // The original would count eleven deliveries by now; its replacement counts from zero.
      expect(countHeader(headers["x-delivery-count"])).toBe(0)
      expect(headers).toMatchObject({ ...story(queue, { reason: "SMTP said no", attempts: 5, at: EARLY }), traceparent: TRACEPARENT })
      expect(refreshed.content.toString()).toBe(encodeCommand(command).toString())
      expect(refreshed.properties.messageId).toBe(command.orderId)
      fixture.channel.reject(refreshed, true)
    }), 120_000)

  it.scopedLive("a replay the broker cannot route is an error, exit 1, and the command stays in the dead-letter queue", () =>
    Effect.gen(function*() {
      const queue = uniqueQueueName("dlqnoroute")
      const fixture = yield* deadLetterFixture(queue)
      const command = newCommand()
      yield* fixture.deadLetterCommand(command, { reason: "SMTP said no", attempts: 5, at: EARLY })
      // The command queue is gone: a copy published to it is returned, never confirmed as queued.
      yield* Effect.promise(() => fixture.channel.deleteQueue(queue))

      const line = expectOneLineFailure(yield* dlq(queue, ["replay", command.orderId]), 1)
      expect(line).toBe(
        `Replay of ${command.orderId} failed (The broker could not route the message to "${queue}"); ` +
          `it and the orders after it are still in ${fixture.deadLetterQueue}`
      )
      expect(yield* queueDepth(fixture.deadLetterQueue)).toBe(1)
      expect((yield* listJson(queue)).map((entry) => entry["orderId"])).toEqual([command.orderId])
    }), 120_000)

  it.scopedLive("--help at every level exits 0 and describes the commands and options, even with no broker", () =>
    Effect.gen(function*() {
      const queue = uniqueQueueName("dlqhelp")
      const noBroker = { AMQP_URL: "amqp://guest:secret@127.0.0.1:1" }
      const expectations: ReadonlyArray<[ReadonlyArray<string>, ReadonlyArray<string>]> = [
        [["--help"], ["list", "replay", "drop", "--limit", "--all", "--poison", "Exit code"]],
        [["list", "--help"], ["--limit N", "--json", "oldest first", "Nothing leaves the queue"]],
        [["replay", "--help"], ["--all", "ORDER_ID", "fresh attempts", "confirmed"]],
        [["drop", "--help"], ["--poison", "ORDER_ID", "not valid commands"]]
      ]
      // None of these touches the broker, so they may run side by side.
      const runs = yield* Effect.forEach(expectations, ([args]) => dlq(queue, args, noBroker), { concurrency: 4 })
      for (const [index, [args, mentions]] of expectations.entries()) {
        const run = runs[index]!
        expect(run.code, run.stderr).toBe(0)
        expect(run.stderr).toBe("")
        for (const mention of mentions) expect(run.stdout, `${args.join(" ")} mentions ${mention}`).toContain(mention)
      }
    }), 120_000)

  it.scopedLive("an unknown command or option, or a wrong combination, is one line and exit 2", () =>
    Effect.gen(function*() {
      const queue = uniqueQueueName("dlqbadargs")
      const cases: ReadonlyArray<[ReadonlyArray<string>, string]> = [
        [["lst"], "Invalid subcommand for dlq - use one of 'list', 'replay', 'drop' (see --help)"],
        [[], "Missing command: list, replay or drop (see --help)"],
        [["list", "--bogus"], "Received unknown argument: '--bogus' (see --help)"],
        [["replay"], "replay needs --all or at least one ORDER_ID (see --help)"],
        [["replay", "--all", makeOrderId()], "replay takes either --all or ORDER_IDs, not both (see --help)"],
        [["drop"], "drop needs at least one ORDER_ID, or --poison (see --help)"]
      ]
      // Each is refused before the broker is touched, so they may run side by side.
      const runs = yield* Effect.forEach(cases, ([args]) => dlq(queue, args), { concurrency: 4 })
      for (const [index, [args, line]] of cases.entries()) {
        expect(expectOneLineFailure(runs[index]!, 2), args.join(" ")).toBe(line)
      }
    }), 120_000)

  it.scopedLive("broker, queue or configuration trouble is one line and exit 1, the password never printed", () =>
    Effect.gen(function*() {
      const queue = uniqueQueueName("dlqtrouble")
      const [brokerDown, noQueue, badTimeout, notAmqp] = yield* Effect.all([
        dlq(queue, ["list"], { AMQP_URL: "amqp://guest:secret@127.0.0.1:1" }),
        dlq(queue, ["replay", "--all"]),
        dlq(queue, ["list"], { PUBLISH_TIMEOUT_MS: "soon" }),
        dlq(queue, ["list"], { AMQP_URL: "http://guest:secret@host" })
      ], { concurrency: 4 })
      const down = expectOneLineFailure(brokerDown, 1)
      expect(down).toMatch(/^Broker not reachable at amqp:\/\/guest:\*\*\*@127\.0\.0\.1:1 \(.+\)$/)
      expect(down).not.toContain("secret")
      expect(down).not.toContain("retrying")

      // No dead-letter queue: the tool does not create one.
      const missing = expectOneLineFailure(noQueue, 1)
      expect(missing).toContain(`"${queue}.dlq" does not exist`)
      const { connection } = yield* testBroker(queue)
      const exists = yield* Effect.promise(async () => {
        // A passive declaration of a missing queue closes its channel: one of its own.
        const probe = await connection.createChannel()
        probe.on("error", () => undefined)
        return probe.checkQueue(`${queue}.dlq`).then(() => true, () => false)
      })
      expect(exists).toBe(false)

      const badConfig = expectOneLineFailure(badTimeout, 1)
      expect(badConfig).toBe("Invalid configuration: PUBLISH_TIMEOUT_MS must be an integer from 1 to 600000 (got \"soon\")")
      const badUrl = expectOneLineFailure(notAmqp, 1)
      expect(badUrl).toContain("AMQP_URL must be")
      expect(badUrl).not.toContain("secret")
    }), 120_000)
})

type Json = Record<string, any>

const post = (body: unknown) =>
  HttpClientRequest.post("/orders").pipe(
    HttpClientRequest.bodyUnsafeJson(body),
    HttpClient.execute,
    Effect.flatMap((response) => Effect.map(response.json, (json) => json as Json))
  )


const sender = (outcome: "fail" | "succeed") =>
  Layer.succeed(
    NotificationSender,
    NotificationSender.make({
      send: (command) =>
        outcome === "succeed" ? Effect.void : Effect.fail(new NotificationFailed({ orderId: command.orderId, reason: "SMTP said no" }))
    })
  )

describe("npm run dlq with the services running", () => {
  it.scopedLive("an order that failed is listed with its reason and attempts, and once replayed it ends notified", () =>
    Effect.gen(function*() {
      const queue = uniqueQueueName("dlqflow")
      const consumerEnv = { COMMAND_QUEUE: queue, NOTIFICATION_MAX_ATTEMPTS: 2, NOTIFICATION_RETRY_DELAY_MS: 0, NOTIFICATION_SEND_DELAY_MS: 0 }
      const { channel } = yield* testBroker(queue, consumerEnv)
      yield* Effect.gen(function*() {
        const orderId: string = yield* Effect.gen(function*() {
          const created = yield* post({ userId: 42 })
          const failed = yield* orderUntil(created.order.orderId, (order) => order.status === "failed")
          expect(failed.failure).toMatchObject({ attempts: 2 })
          return created.order.orderId
        }).pipe(Effect.provide(notificationConsumer(consumerEnv, sender("fail"))))
        // The event that failed the order goes out before the command reaches the dead-letter queue.
        yield* eventually(() => channel.checkQueue(`${queue}.dlq`), ({ messageCount }) => messageCount === 1, {
          what: "the dead-lettered command"
        })

        const listed = yield* listJson(queue)
        expect(listed).toHaveLength(1)
        expect(listed[0]).toMatchObject({ orderId, validCommand: true, messageId: orderId, attempts: 2, originalQueue: queue })
        expect(listed[0]!["reason"]).toContain("SMTP said no")

        // Replayed while a notification service consumes the command queue: just a new command for it.
        yield* Effect.gen(function*() {
          const replay = yield* dlq(queue, ["replay", orderId])
          expect(replay.code, replay.stderr).toBe(0)
          expect(replay.stdout).toContain(orderId)
          const notified = yield* orderUntil(orderId, (order) => order.status === "notified")
          expect(notified.notifications).toBe(1)
        }).pipe(Effect.provide(notificationConsumer(consumerEnv, sender("succeed"))))

        expect(yield* listJson(queue)).toEqual([])
        expect(yield* queueDepth(`${queue}.dlq`)).toBe(0)
      }).pipe(Effect.provide(orderService({ COMMAND_QUEUE: queue })))
    }), 120_000)
})
