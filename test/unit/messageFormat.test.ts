import { describe, expect, it } from "@effect/vitest"
import { Either, Schema } from "effect"
import { makeOrderId, UserId } from "../../src/domain/Order"
import { uuidv7 } from "../../src/domain/uuidv7"
import {
  commandProperties,
  decodeCommand,
  encodeCommand,
  SendNotificationCommand
} from "../../src/contracts/SendNotificationCommand"

describe("uuidv7", () => {
  it("has version 7, the RFC variant, and the time in its first 48 bits", () => {
    const now = Date.UTC(2026, 10, 25, 12, 0, 0)
    const id = uuidv7(now)
    expect(id).toMatch(/^[0-9a-f]{8}-[0-9a-f]{4}-7[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/)
    expect(parseInt(id.slice(0, 8) + id.slice(9, 13), 16)).toBe(now)
  })

  it("does not collide within one millisecond, where Date.now() ids would", () => {
    const ids = Array.from({ length: 100_000 }, () => uuidv7(1_700_000_000_000))
    expect(new Set(ids).size).toBe(ids.length)
  })

  it("sorts by creation time across milliseconds", () => {
    const earlier = uuidv7(1_700_000_000_000)
    const later = uuidv7(1_700_000_000_001)
    expect([later, earlier].sort()).toEqual([earlier, later])
  })

  it("increases from one id to the next, within a millisecond too (newest first is id order)", () => {
    const ids = Array.from({ length: 10_000 }, () => uuidv7())
    expect([...ids].sort()).toEqual(ids)
    expect(new Set(ids).size).toBe(ids.length)
  })
})

describe("SendNotificationCommand", () => {
  const command = new SendNotificationCommand({ orderId: makeOrderId(), userId: UserId.make(42) })

  it("is the original demo's body, with a string id", () => {
    expect(JSON.parse(encodeCommand(command).toString())).toEqual({ orderId: command.orderId, userId: 42 })
  })

  it("is encoded exactly as the schema encodes it", () => {
    const schemaEncoding = Schema.encodeSync(Schema.parseJson(SendNotificationCommand))
    for (const userId of [1, 42, Number.MAX_SAFE_INTEGER]) {
      const other = new SendNotificationCommand({ orderId: command.orderId, userId: UserId.make(userId) })
      expect(encodeCommand(other).toString("utf8")).toBe(schemaEncoding(other))
    }
  })

  it("round-trips through the wire format, to an instance of the class", () => {
    const decoded = decodeCommand(encodeCommand(command))
    expect(decoded).toEqual(Either.right(command))
    expect(Either.getOrThrow(decoded)).toBeInstanceOf(SendNotificationCommand)
  })

  it("carries the contract's properties", () => {
    const properties = commandProperties(command.orderId, "order-service")
    expect(properties).toMatchObject({
      persistent: true,
      mandatory: true,
      contentType: "application/json",
      messageId: command.orderId,
      type: "SendNotificationCommand",
      appId: "order-service"
    })
    expect(Math.abs(Number(properties.timestamp) - Date.now() / 1000)).toBeLessThan(5)
  })

  it("explains in one line why a body is not a command", () => {
    const result = decodeCommand(Buffer.from(JSON.stringify({ orderId: 17, userId: -1 })))
    expect(Either.isLeft(result)).toBe(true)
    const reason = Either.getLeft(result).pipe((o) => (o._tag === "Some" ? o.value : ""))
    expect(reason).toContain("orderId")
    expect(reason).toContain("userId")
    expect(reason).not.toContain("\n")
  })
})
