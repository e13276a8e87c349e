import type * as amqp from "amqplib"
import { Data } from "effect"

/**
 * What becomes of a delivery, decided as a value and then applied to the channel that delivered it.
 *
 * - `Ack`: done.
 * - `Retry`: `basic.reject` with requeue. Reject rather than nack: RabbitMQ 4.3+ counts only a reject
 *   towards a quorum queue's delivery count (3.10 to 4.2 count both), so attempts add up on every version.
 * - `DeadLetter`: `basic.reject` without requeue; the queue routes it to `<queue>.dlq`.
 */
export type Settlement = Data.TaggedEnum<{
  Ack: {}
  Retry: { readonly reason: string }
  /** `poison`: the message is not a command at all (so there is no order to name in the logs). */
  DeadLetter: { readonly reason: string; readonly poison: boolean }
}>
export const Settlement = Data.taggedEnum<Settlement>()

/**
 * Which delivery of this message this is, 1 for the first. Quorum queues count earlier deliveries
 * in `x-delivery-count` (RabbitMQ up to 4.2: every return; 4.3+: rejects only) and, from 4.3,
 * every earlier acquisition in `x-acquired-count`. The larger counts deliveries lost to crashes too.
 */
export const deliveryAttempt = (message: amqp.Message): number => {
  const headers = message.properties.headers ?? {}
  return 1 + Math.max(count(headers["x-delivery-count"]), count(headers["x-acquired-count"]))
}

/** A count header's value: 0 unless it is a positive number. */
const count = (header: unknown) => {
  const value = Number(header ?? 0)
  return Number.isFinite(value) && value > 0 ? value : 0
}
