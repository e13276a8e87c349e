import type * as amqp from "amqplib"
import { EventEmitter } from "node:events"
import { describe, expect, it } from "vitest"
import { makeAckCoalescer } from "../../src/messaging/AckCoalescer"

/** A channel that records the acks it is asked to send, as `tag` or `tag+` (multiple). */
const recordingChannel = () => {
  const sent: Array<string> = []
  const channel = Object.assign(new EventEmitter(), {
    ack: (message: amqp.Message, allUpTo?: boolean) => void sent.push(`${message.fields.deliveryTag}${allUpTo ? "+" : ""}`)
  })
  return { channel: channel as unknown as amqp.Channel, sent, close: () => channel.emit("close") }
}

const delivery = (deliveryTag: number) => ({ fields: { deliveryTag } }) as amqp.Message
const nextTick = () => new Promise<void>((resolve) => process.nextTick(resolve))

describe("AckCoalescer", () => {
  it("sends the acks of one tick as one ack with multiple, for the settled prefix", async () => {
    const { channel, sent } = recordingChannel()
    const acks = makeAckCoalescer(channel)
    const messages = [1, 2, 3].map(delivery)
    messages.forEach(acks.received)
    messages.forEach(acks.ack)
    expect(sent).toEqual([])
    await nextTick()
    expect(sent).toEqual(["3+"])
  })

  it("acks singly past a delivery still in flight, which multiple would ack too early", async () => {
    const { channel, sent } = recordingChannel()
    const acks = makeAckCoalescer(channel)
    const [one, two, three] = [1, 2, 3].map(delivery)
    ;[one!, two!, three!].forEach(acks.received)
    acks.ack(one!)
    acks.ack(three!)
    await nextTick()
    expect(sent).toEqual(["3", "1+"])
    acks.ack(two!)
    await nextTick()
    expect(sent).toEqual(["3", "1+", "2+"])
  })

  it("treats a rejected delivery as settled, and flushes on demand before the channel closes", () => {
    const { channel, sent } = recordingChannel()
    const acks = makeAckCoalescer(channel)
    const [one, two] = [1, 2].map(delivery)
    ;[one!, two!].forEach(acks.received)
    acks.forget(one!)
    acks.ack(two!)
    acks.flush()
    expect(sent).toEqual(["2+"])
  })

  it("once told to hold (a shutdown's drain), sends nothing until flush, then one ack for them all", async () => {
    const { channel, sent } = recordingChannel()
    const acks = makeAckCoalescer(channel)
    const messages = Array.from({ length: 50 }, (_, i) => delivery(i + 1))
    messages.forEach(acks.received)
    acks.holdUntilFlush()
    // Each send of a drain ends in a tick of its own.
    for (const message of messages) {
      acks.ack(message)
      await nextTick()
    }
    expect(sent).toEqual([])
    acks.flush()
    expect(sent).toEqual(["50+"])
  })

  it("refuses an ack once the channel has closed, as amqplib would", () => {
    const { channel, close } = recordingChannel()
    const acks = makeAckCoalescer(channel)
    const one = delivery(1)
    acks.received(one)
    close()
    expect(() => acks.ack(one)).toThrow(/closed/)
  })
})
