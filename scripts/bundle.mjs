#!/usr/bin/env node
// Second step of `npm run build`: bundles tsc's output (dist/src) into dist/bundle with esbuild, which is what
// bin/egress-router runs. Node 20 resolves, reads and links every ES module file on its own: the daemon's
// path to its first nft transaction loaded ~90 files (commander, pino and ours) and spent more time on that
// than on everything else it does before the rules are in place. One file per entry (and shared chunks) cuts that;
// what the daemon imports lazily (undici, prom-client, the proxies, netlink) stays in chunks of its own, loaded
// when first used.
//
// Only whitespace and comments are minified: names stay, so stack traces keep their function names; `.js.map` files
// sit beside the chunks (`NODE_OPTIONS=--enable-source-maps` maps traces back to src/). V8 keeps a loaded chunk's
// whole source text on its heap (functions are compiled lazily from it): 1.27 → 0.90 MB of chunks, and the
// http-proxy's large-object space after a plain GET 1.5 → 0.9 MiB. netlink has a native addon and pino-pretty is
// optional: both stay in node_modules and are loaded from there.
import { build } from 'esbuild'
import { rmSync } from 'node:fs'
import { fileURLToPath } from 'node:url'

/** Entry points: the cli (bin/egress-router), the cluster workers' main, the lab's whoami server. */
export const ENTRIES = ['src/cli.js', 'src/lifecycle/worker-main.js', 'src/lab/whoami.js']
export const OUT_DIR = 'dist/bundle'

const CLIENT_H2_STUB = fileURLToPath(new URL('./undici-client-h2-stub.cjs', import.meta.url))

/** undici's HTTP/2 client, required by its Client at load, replaced by a stub (see the stub for why). */
const withoutUndiciHttp2 = {
  name: 'undici-without-http2',
  setup (b) {
    b.onResolve({ filter: /^\.\/client-h2\.js$/ }, (args) => args.importer.includes('/undici/lib/dispatcher/') ? { path: CLIENT_H2_STUB } : undefined)
  }
}

export async function bundle (root) {
  const outdir = `${root}/${OUT_DIR}`
  rmSync(outdir, { recursive: true, force: true })
  await build({
    absWorkingDir: root,
    entryPoints: ENTRIES.map((e) => `dist/${e}`),
    outdir,
    // every output in one directory: `new URL('./worker-main.js', import.meta.url)` from a chunk finds its entry
    entryNames: '[name]',
    chunkNames: 'chunk-[hash]',
    bundle: true,
    splitting: true,
    format: 'esm',
    platform: 'node',
    target: 'node20',
    sourcemap: 'linked',
    minifyWhitespace: true,
    external: ['netlink', 'pino-pretty'],
    plugins: [withoutUndiciHttp2],
    // the CommonJS dependencies (commander, pino, prom-client, …) call require() for Node's built-ins
    banner: { js: "import { createRequire as __createRequire } from 'node:module'; const require = __createRequire(import.meta.url);" },
    logLevel: 'warning'
  })
}

if (process.argv[1] === fileURLToPath(import.meta.url)) {
  await bundle(fileURLToPath(new URL('..', import.meta.url)))
}
