import { createReadStream, createWriteStream, existsSync, readFileSync } from "node:fs"
import { mkdir, rename, rm } from "node:fs/promises"
import { createRequire } from "node:module"
import { dirname, join } from "node:path"
import { pipeline } from "node:stream/promises"
import { createBrotliDecompress } from "node:zlib"

/**
 * Which Chromium the browser tests drive. `npm install` alone must be enough on a fresh machine,
 * where Chromium's own downloads (`playwright install`, `@puppeteer/browsers`) cannot be reached.
 */

/** Debian's chromium package puts its launcher here. */
export const DEBIAN_CHROMIUM = "/usr/bin/chromium"

export type ChromiumSource = "CHROMIUM_PATH" | "debian" | "npm"

export interface FoundChromium {
  readonly executablePath: string
  readonly source: ChromiumSource
}

/**
 * Flags for every launch: root needs `--no-sandbox`, and the rest keep Chromium off the network,
 * which this machine does not have (without them it retries refused connections at every start).
 */
export const chromiumArgs: ReadonlyArray<string> = [
  "--no-sandbox",
  "--disable-gpu",
  "--disable-quic",
  "--no-first-run",
  "--disable-background-networking",
  "--disable-component-update",
  "--disable-sync"
]

/**
 * The browser to use, in this order: `CHROMIUM_PATH` when set (it must exist: a wrong path is an
 * error, not a quiet fallback); Debian's `/usr/bin/chromium` when installed; else the Chromium
 * that the devDependency `@sparticuz/chromium` ships inside its npm tarball.
 */
export const findChromium = async (
  options: { readonly env?: NodeJS.ProcessEnv; readonly debianPath?: string } = {}
): Promise<FoundChromium> => {
  const { env = process.env, debianPath = DEBIAN_CHROMIUM } = options
  const fromEnv = env.CHROMIUM_PATH
  if (fromEnv !== undefined && fromEnv !== "") {
    if (!existsSync(fromEnv)) throw new Error(`CHROMIUM_PATH is ${fromEnv}, and there is no file there`)
    return { executablePath: fromEnv, source: "CHROMIUM_PATH" }
  }
  if (existsSync(debianPath)) return { executablePath: debianPath, source: "debian" }
  return { executablePath: await bundledChromium(), source: "npm" }
}

let bundled: Promise<string> | undefined

/**
 * The Chromium inside `@sparticuz/chromium` (a headless shell built for AWS Lambda, x64 only), brotli
 * compressed in the package's `bin/chromium.br`, decompressed once per installed version into
 * `node_modules/.cache/`. On Debian 12 it needs only libc, libnss3, libnspr4 and libexpat1, which
 * the machine image already has.
 *
 * Decompressed here rather than with the package's `executablePath()`: that one writes to a fixed
 * `/tmp/chromium` in place and then reuses whatever file is there, so an interrupted run, or
 * another checkout with another version, would leave a broken or wrong browser for every later
 * run. Here the file is written beside its final name and renamed into place when complete.
 * The package's `args` are not used either: they are for Lambda (`--single-process`,
 * `--disable-web-security`, ...) and this browser runs here without them.
 */
export const bundledChromium = (): Promise<string> => {
  bundled ??= decompressBundled().catch((error: unknown) => {
    bundled = undefined
    throw error
  })
  return bundled
}

const decompressBundled = async (): Promise<string> => {
  const packageDir = findPackageDir("@sparticuz/chromium")
  const { version } = JSON.parse(readFileSync(join(packageDir, "package.json"), "utf8")) as { version: string }
  const target = join(packageDir, "..", "..", ".cache", `sparticuz-chromium-${version}`, "chromium")
  if (existsSync(target)) return target

  const source = join(packageDir, "bin", "chromium.br")
  if (!existsSync(source)) {
    throw new Error(`${source} is missing: run \`npm install\` (it ships the browser for the docs test)`)
  }
  await mkdir(dirname(target), { recursive: true })
  const partial = `${target}.${process.pid}.partial`
  try {
    await pipeline(createReadStream(source), createBrotliDecompress(), createWriteStream(partial, { mode: 0o755 }))
    await rename(partial, target)
  } catch (error) {
    await rm(partial, { force: true })
    throw error
  }
  return target
}

/** The folder of an installed package, found the way Node finds it, from its entry point up. */
const findPackageDir = (name: string): string => {
  let dir = dirname(createRequire(import.meta.url).resolve(name))
  while (!existsSync(join(dir, "package.json")) || !dir.endsWith(join("node_modules", name))) {
    const parent = dirname(dir)
    if (parent === dir) throw new Error(`Cannot find the folder of ${name}: run \`npm install\``)
    dir = parent
  }
  return dir
}
