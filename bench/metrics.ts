/** Reading the order service's GET /metrics (Prometheus text): a gauge, and a histogram's buckets. */

/** One scrape: each sample's line (`name{labels}`) and its value. */
export type Scrape = ReadonlyMap<string, number>

export const scrape = async (url: string): Promise<Scrape> => {
  const response = await fetch(url)
  if (response.status !== 200) throw new Error(`${url} answered ${response.status}`)
  const samples = new Map<string, number>()
  for (const line of (await response.text()).split("\n")) {
    if (line.startsWith("#") || line.trim() === "") continue
    const at = line.lastIndexOf(" ")
    samples.set(line.slice(0, at), Number(line.slice(at + 1)))
  }
  return samples
}

export const gauge = (samples: Scrape, name: string): number => {
  const value = samples.get(name)
  if (value === undefined) throw new Error(`no ${name} on /metrics`)
  return value
}

/** A histogram's cumulative bucket counts, by upper bound (+Inf last). */
export const buckets = (samples: Scrape, name: string): ReadonlyArray<{ readonly le: number; readonly count: number }> => {
  const found: Array<{ le: number; count: number }> = []
  for (const [key, count] of samples) {
    const match = new RegExp(`^${name}_bucket\\{le="([^"]+)"\\}$`).exec(key)
    if (match) found.push({ le: match[1] === "+Inf" ? Infinity : Number(match[1]), count })
  }
  if (found.length === 0) throw new Error(`no ${name} histogram on /metrics`)
  return found.sort((a, b) => a.le - b.le)
}

export interface HistogramDelta {
  readonly count: number
  /** Linear within the bucket the quantile falls in, as Prometheus' histogram_quantile does. */
  readonly quantile: (q: number) => number
}

/** What was observed between two scrapes of the same histogram. */
export const histogramDelta = (before: Scrape, after: Scrape, name: string): HistogramDelta => {
  const b = new Map(buckets(before, name).map(({ count, le }) => [le, count]))
  const delta = buckets(after, name).map(({ count, le }) => ({ le, count: count - (b.get(le) ?? 0) }))
  const total = delta[delta.length - 1]!.count
  return {
    count: total,
    quantile: (q) => {
      if (total === 0) return NaN
      const rank = q * total
      let lower = 0
      let below = 0
      for (const { count, le } of delta) {
        if (count >= rank) {
          // Above the last finite bound there is nothing to interpolate to: report that bound.
          if (le === Infinity) return lower
          return lower + (le - lower) * ((rank - below) / Math.max(count - below, 1))
        }
        lower = le
        below = count
      }
      return lower
    }
  }
}
