import type * as amqp from "amqplib"
import { Data } from "effect"
import { countHeader, readStory } from "./FailureStory"

/**
 * What becomes of a delivery, decided as a value and then applied to the channel that delivered it.
 *
 * - `Ack`: done.
 * - `Retry`: `basic.reject` with requeue, for an immediate retry. Reject rather than nack: RabbitMQ
 *   4.3+ counts only a reject towards a quorum queue's delivery count (3.10 to 4.2 count both), so
 *   attempts add up on every version.
 * - `RetryLater`: a copy with its failure story goes to the delay queue for `delayMillis`, to wait
 *   `waitMillis` there; once the broker has confirmed it, the delivery is acked.
 * - `DeadLetter`: a copy with its failure story goes to `<queue>.dlq`, confirmed, then the ack.
 *
 * `attempts`: the attempts made so far, this one included, written into the copy's story.
 */
export type Settlement = Data.TaggedEnum<{
  Ack: {}
  Retry: { readonly reason: string }
  RetryLater: {
    readonly reason: string
    readonly attempts: number
    readonly delayMillis: number
    readonly waitMillis: number
  }
  /** `poison`: the message is not what the queue carries at all (so there is no order to name in the logs). */
  DeadLetter: { readonly reason: string; readonly poison: boolean; readonly attempts: number }
}>
export const Settlement = Data.taggedEnum<Settlement>()

/**
 * Which attempt this delivery is, 1 for the first: the attempts its story records (made before it
 * last waited in a delay queue), plus this copy's earlier deliveries from the queue. Quorum queues
 * count those in `x-delivery-count` (RabbitMQ up to 4.2: every return; 4.3+: rejects only) and,
 * from 4.3, every earlier acquisition in `x-acquired-count`. The larger counts deliveries lost to
 * crashes too.
 */
export const deliveryAttempt = (message: amqp.Message): number => {
  const headers = message.properties.headers ?? {}
  const earlierDeliveries = Math.max(countHeader(headers["x-delivery-count"]), countHeader(headers["x-acquired-count"]))
  return 1 + readStory(message).attempts + earlierDeliveries
}
