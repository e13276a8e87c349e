/**
 * `npm run build`: each service bundled into one ES module under dist/, run by plain `node`. `npm
 * start` builds and runs the bundle of both services, and so does the image; `npm run start:order`,
 * `start:notification` and `npx tsx ...` run the sources with no build. The bundle needs about half
 * the memory of the same code under tsx (docs/performance.md), whose loader keeps a second V8
 * isolate and per-module state for every one of the few hundred modules the services import.
 *
 * Everything is bundled, node_modules included, except better-sqlite3: a native addon, which finds
 * its compiled `.node` file beside its own sources, so it stays in node_modules (the image copies it).
 */
import { build } from "esbuild"

export const SERVICE_ENTRIES = ["src/main.ts", "src/order/main.ts", "src/notification/main.ts"] as const

/** Where `npm run build` puts the bundle of a service entry point: src/x/main.ts → dist/x/main.mjs. */
export const bundledEntry = (entry: string) => entry.replace(/^src\//, "dist/").replace(/\.ts$/, ".mjs")

/** Bundles `entryPoints` (paths relative to `outbase`, kept under `outdir`) as `.mjs` files. */
export const bundle = (entryPoints: ReadonlyArray<string>, options: { readonly outbase: string; readonly outdir: string }) =>
  build({
    entryPoints: [...entryPoints],
    outbase: options.outbase,
    outdir: options.outdir,
    outExtension: { ".js": ".mjs" },
    bundle: true,
    platform: "node",
    format: "esm",
    target: "node20",
    sourcemap: true,
    logLevel: "warning",
    external: ["better-sqlite3"],
    // Some dependencies are CommonJS and `require` Node's modules; an ES module has no `require`.
    banner: { js: "import { createRequire } from 'node:module'; const require = createRequire(import.meta.url);" }
  })

if (import.meta.url === `file://${process.argv[1]}`) {
  await bundle(SERVICE_ENTRIES, { outbase: "src", outdir: "dist" })
  console.log(`Built ${SERVICE_ENTRIES.map(bundledEntry).join(", ")}`)
}
