/**
 * The `netlink` package, loaded with require(). It is CommonJS (it has a native addon), and Node 20 links a
 * CommonJS module into an ES module import by scanning its source with cjs-module-lexer, a WebAssembly module
 * compiled for that scan whose code and memory then stay: in a bare node, `import 'netlink'` costs 2.8 MiB
 * more RSS than require('netlink') (54.0 against 51.2 MiB, 3 runs each). Loaded on first use; once, by the
 * module cache.
 */
import { createRequire } from 'node:module'

export type NetlinkLibrary = typeof import('netlink')

const requireCommonJs = createRequire(import.meta.url)

export function netlinkLibrary (): NetlinkLibrary {
  return requireCommonJs('netlink') as NetlinkLibrary
}
