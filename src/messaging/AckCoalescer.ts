import type * as amqp from "amqplib"

/**
 * Acks on one channel, coalesced: acks made in the same tick go out together, as one `basic.ack`
 * with `multiple` for the run of deliveries that are all settled from the oldest in flight on, and
 * singly for any acked past a delivery still in flight (which `multiple` would ack too early).
 * amqplib hands the consumer every delivery of one socket read in one tick, so draining a backlog
 * this sends one ack frame per read instead of one per message.
 *
 * The flush is a `process.nextTick`, not a `setImmediate`: the broker sends more only as acks come
 * back, so below a large prefetch every delay before the ack is time both sides wait. In
 * alternating runs nextTick drained faster in every pair (docs/performance.md, "What the profiles
 * showed").
 *
 * Rejects are not coalesced: the caller sends them at once, and tells us with `forget`.
 *
 * At shutdown the acks are held until the drain is over, then sent as one frame. RabbitMQ 3.10's
 * quorum queues keep a limited number of a channel's settles outstanding, hold back the rest until
 * those are applied, and drop what they hold back when the channel closes. A drain's sends end
 * together (one timer each), so their acks went out as one frame per send just before the close,
 * and in some shutdowns a few of them never counted: those commands came back and were sent twice.
 * One `multiple` ack lost none in the reproduction (docs/faults.md, "Graceful shutdown and RabbitMQ
 * 3.10's settles").
 */
export interface AckCoalescer {
  /** Call for every delivery, in delivery order, when it arrives. */
  readonly received: (message: amqp.Message) => void
  /** Acks the delivery by the end of this tick; throws, as amqplib would, if the channel has closed. */
  readonly ack: (message: amqp.Message) => void
  /** The delivery was settled otherwise (rejected), or will never be (its channel is gone). */
  readonly forget: (message: amqp.Message) => void
  /** From now on acks wait for `flush` (a shutdown's drain), to go out together. */
  readonly holdUntilFlush: () => void
  /** Sends the acks still waiting, now (before closing the channel). */
  readonly flush: () => void
}

export const makeAckCoalescer = (channel: amqp.Channel): AckCoalescer => {
  // Deliveries in flight by tag, in delivery order (a Map keeps insertion order); true once acked.
  const inFlight = new Map<number, { readonly message: amqp.Message; acked: boolean }>()
  let scheduled = false
  let holding = false
  let closed = false
  channel.on("close", () => (closed = true))

  const flush = () => {
    scheduled = false
    let prefix: amqp.Message | undefined
    let inPrefix = true
    try {
      for (const [tag, delivery] of inFlight) {
        if (!delivery.acked) {
          inPrefix = false
          continue
        }
        inFlight.delete(tag)
        if (inPrefix) prefix = delivery.message
        else channel.ack(delivery.message)
      }
      if (prefix !== undefined) channel.ack(prefix, true)
    } catch {
      // The channel closed under us: the broker puts these deliveries back and redelivers them.
      inFlight.clear()
    }
  }

  return {
    received: (message) => void inFlight.set(message.fields.deliveryTag, { message, acked: false }),
    ack: (message) => {
      if (closed) throw new Error("Channel closed")
      const delivery = inFlight.get(message.fields.deliveryTag)
      if (delivery === undefined) return channel.ack(message)
      delivery.acked = true
      if (!scheduled && !holding) {
        scheduled = true
        process.nextTick(flush)
      }
    },
    forget: (message) => void inFlight.delete(message.fields.deliveryTag),
    holdUntilFlush: () => void (holding = true),
    flush
  }
}
