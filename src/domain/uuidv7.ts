import { v7 } from "uuid"

/**
 * RFC 9562 UUIDv7, lowercase, from the `uuid` package: the Unix milliseconds first, and ids made
 * in one process increase even within a millisecond (its counter). `now` fixes the time (tests).
 */
export const uuidv7 = (now?: number): string => (now === undefined ? v7() : v7({ msecs: now }))
