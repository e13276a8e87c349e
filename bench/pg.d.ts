// The part of pg's API the benchmark uses (it comes with @effect/sql-pg; there is no @types/pg here).
declare module "pg" {
  interface ClientConfig {
    readonly connectionString?: string
    readonly connectionTimeoutMillis?: number
  }
  class Client {
    constructor(config?: ClientConfig)
    connect(): Promise<void>
    query(text: string): Promise<unknown>
    end(): Promise<void>
  }
  const pg: { readonly Client: typeof Client }
  export default pg
}
