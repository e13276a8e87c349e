/**
 * The order store each project order service the benchmark starts is given: a store of its own,
 * made before the service starts and removed after it stops (or by `removeAllStores` whatever
 * happened). SQLite: a fresh file in a temporary folder. PostgreSQL: a schema of its own in
 * `BENCH_DATABASE_URL`, chosen by the connection's `search_path`.
 */
import { randomUUID } from "node:crypto"
import { mkdtempSync, rmSync } from "node:fs"
import { tmpdir } from "node:os"
import { join } from "node:path"
import pg from "pg"

export const STORE_KINDS = ["sqlite", "postgres"] as const
export type StoreKind = (typeof STORE_KINDS)[number]

export const STORE_NAMES: Record<StoreKind, string> = { sqlite: "SQLite", postgres: "PostgreSQL" }

export const POSTGRES_URL = process.env.BENCH_DATABASE_URL ?? "postgres://postgres@127.0.0.1:5432/test"

/** `BENCH_STORES`: a comma list of sqlite and postgres, `sqlite` by default. */
export const storesFromEnv = (): ReadonlyArray<StoreKind> => {
  const listed = (process.env.BENCH_STORES ?? "sqlite").split(",").map((s) => s.trim()).filter((s) => s !== "")
  const unknown = listed.filter((s) => !(STORE_KINDS as ReadonlyArray<string>).includes(s))
  if (listed.length === 0 || unknown.length > 0) throw new Error(`BENCH_STORES must be a comma list of: ${STORE_KINDS.join(", ")}`)
  return STORE_KINDS.filter((kind) => listed.includes(kind))
}

export interface Store {
  readonly kind: StoreKind
  /** The service's DATABASE_URL. */
  readonly databaseUrl: string
  readonly remove: () => Promise<void>
}

const live = new Set<Store>()

const withClient = async <A>(f: (client: InstanceType<typeof pg.Client>) => Promise<A>): Promise<A> => {
  const client = new pg.Client({ connectionString: POSTGRES_URL, connectionTimeoutMillis: 5000 })
  await client.connect()
  try {
    return await f(client)
  } finally {
    await client.end()
  }
}

/** A URL with `search_path` set to `schema`, keeping whatever query `base` had. */
const withSearchPath = (base: string, schema: string) =>
  `${base}${base.includes("?") ? "&" : "?"}options=${encodeURIComponent(`-c search_path=${schema}`)}`

/** Fails at once, with the URL, if PostgreSQL is not there: better than a service retrying forever. */
export const checkPostgres = () =>
  withClient((client) => client.query("SELECT 1")).catch((error: unknown) => {
    throw new Error(`BENCH_STORES has postgres, but ${POSTGRES_URL.replace(/:[^:@/]*@/, ":***@")} is not reachable: ${String(error)}`)
  })

export const createStore = async (kind: StoreKind): Promise<Store> => {
  let store: Store
  if (kind === "sqlite") {
    const dir = mkdtempSync(join(tmpdir(), "bench-store-"))
    store = {
      kind,
      databaseUrl: join(dir, "orders.db"),
      remove: async () => rmSync(dir, { recursive: true, force: true })
    }
  } else {
    const schema = `bench_${randomUUID().replace(/-/g, "").slice(0, 12)}`
    await withClient((client) => client.query(`CREATE SCHEMA "${schema}"`))
    store = {
      kind,
      databaseUrl: withSearchPath(POSTGRES_URL, schema),
      remove: () => withClient((client) => client.query(`DROP SCHEMA IF EXISTS "${schema}" CASCADE`)).then(() => undefined)
    }
  }
  live.add(store)
  const remove = store.remove
  return { ...store, remove: () => remove().finally(() => live.delete(store)) }
}

/** Removes every store not removed yet; after the services using them have stopped. */
export const removeAllStores = async () => {
  for (const store of [...live]) {
    await store.remove().catch((error: unknown) => console.error(`could not remove a ${store.kind} store: ${String(error)}`))
    live.delete(store)
  }
}
