import type * as amqp from "amqplib"

/** The two amqplib 2.3.1 internals `writeFramesInBatches` relies on. */
export interface ConnectionInternals {
  readonly stream?: { cork(): void; uncork(): void }
  readonly muxer?: { _readIncoming(): void }
}

/** A connection's internals, as amqplib keeps them (`ChannelModel.connection`, not in its types). */
export const connectionInternals = (model: amqp.ChannelModel): ConnectionInternals =>
  (model as unknown as { readonly connection: ConnectionInternals }).connection

/**
 * Makes the frames amqplib writes in one turn of the event loop go to the socket as one write.
 *
 * amqplib queues each channel's frames and, once a turn, its muxer hands them to the socket one
 * `write` at a time: one system call per publish (or ack) while the socket keeps up. Corking the
 * socket around the muxer's pass turns them into one `writev`, and no frame waits longer than it
 * did (what it saved: docs/performance.md, "What the profiles showed").
 *
 * amqplib offers no option for this, so this wraps one internal method of the pinned version. A
 * version without these internals goes without, and test/integration/amqplibFrameBatching.test.ts
 * fails on it, so an upgrade cannot lose the batching unnoticed.
 */
export const writeFramesInBatches = (model: amqp.ChannelModel): amqp.ChannelModel => {
  const { muxer, stream } = connectionInternals(model)
  if (stream === undefined || typeof muxer?._readIncoming !== "function") return model
  const writeQueuedFrames = muxer._readIncoming.bind(muxer)
  muxer._readIncoming = () => {
    stream.cork()
    try {
      writeQueuedFrames()
    } finally {
      stream.uncork()
    }
  }
  return model
}
