import { randomFillSync } from "node:crypto"

// RFC 9562 UUIDv7: 48-bit Unix milliseconds, then 74 random bits. Random bytes are drawn in
// batches because one `randomFillSync` call per id costs more than the rest of the id.
const POOL_IDS = 256
const pool = Buffer.alloc(10 * POOL_IDS)
let poolOffset = pool.length

const hex = Array.from({ length: 256 }, (_, byte) => byte.toString(16).padStart(2, "0"))

export const uuidv7 = (now: number = Date.now()): string => {
  if (poolOffset === pool.length) {
    randomFillSync(pool)
    poolOffset = 0
  }
  const r = poolOffset
  poolOffset += 10
  const time = now.toString(16).padStart(12, "0")
  return (
    time.slice(0, 8) + "-" + time.slice(8, 12) + "-" +
    hex[0x70 | (pool[r]! & 0x0f)] + hex[pool[r + 1]!] + "-" +
    hex[0x80 | (pool[r + 2]! & 0x3f)] + hex[pool[r + 3]!] + "-" +
    hex[pool[r + 4]!] + hex[pool[r + 5]!] + hex[pool[r + 6]!] + hex[pool[r + 7]!] + hex[pool[r + 8]!] + hex[pool[r + 9]!]
  )
}
