/**
 * What the running daemon loads of Node itself, in each mode, through start-up, a scrape of /metrics, traffic and
 * a drain: never node:crypto, tls, http2 or zlib (OpenSSL's initialisation, ~2 MiB of RSS that stays, for a daemon with no
 * TLS), never cjs-module-lexer (an ES module import of a CommonJS package). Each of these was loaded once —
 * prom-client's index (its Pushgateway requires https and zlib), sha256 and random numbers from node:crypto,
 * undici's HTTP/2 client, `import 'netlink'` — and together they were 6.6 MiB of a CONNECT proxy's RSS holding 1,000 tunnels.
 *
 * The list comes from the daemon itself: test/fixtures/ops/module-list.cjs, loaded with `node --require`, writes
 * process.moduleLoadList when it exits. undici's HTTP/2 client (node:http2, which loads tls) is not in the bundle
 * (scripts/undici-client-h2-stub.cjs): plain HTTP is part of the http-proxy case.
 */
import { mkdtempSync, readFileSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'
import t, { type Test } from 'tap'
import { startRouter } from '../../src/lab/router-process.js'
import type { Topology } from '../../src/lab/topology.js'
import { privileged } from '../helpers/privileged.js'
import { httpGet, startPeerServer, tcpRequest } from '../helpers/peers.js'
import { distMissing } from '../helpers/router-e2e.js'
import { DEST_NAME, opsEnv, opsTopology, scrape, v4 } from '../helpers/ops-e2e.js'

const missing = distMissing()
if (missing !== null) t.fail(missing)

const MODULE_LIST = fileURLToPath(new URL('../fixtures/ops/module-list.cjs', import.meta.url))
const UNWANTED = [/^NativeModule crypto$/, /^Internal Binding crypto$/, /^NativeModule tls$/, /^NativeModule http2$/, /^NativeModule zlib$/, /cjs-module-lexer/]

/** Runs the daemon with the module-list fixture, lets `exercise` use it, stops it; the modules it loaded. */
async function modulesLoaded (t: Test, topo: Topology, env: Record<string, string>, exercise: () => Promise<void>): Promise<string[]> {
  const dir = mkdtempSync(join(tmpdir(), 'er-modules-'))
  t.teardown(() => { rmSync(dir, { recursive: true, force: true }) })
  const file = join(dir, 'modules.txt')
  const router = startRouter(topo, { ...env, MODULE_LIST_FILE: file }, { nodeArgs: ['--require', MODULE_LIST] })
  t.teardown(async () => { await router.stop('SIGKILL', 5_000) })
  await router.waitReady(20_000)
  t.ok((await scrape(topo)).length > 0, '/metrics answers')
  await exercise()
  const exit = await router.stop('SIGTERM', 15_000)
  t.equal(exit.code, 0, `the daemon exited cleanly (${JSON.stringify(exit)}; ${router.stderr().trim()})`)
  const modules = readFileSync(file, 'utf8').split('\n').filter((l) => l !== '')
  t.ok(modules.includes('NativeModule net'), `the list is the daemon's (${modules.length} entries)`)
  return modules
}

function noneUnwanted (t: Test, modules: readonly string[]): void {
  for (const re of UNWANTED) {
    const hits = modules.filter((m) => re.test(m))
    t.same(hits, [], `not loaded: ${re.source}`)
  }
}

t.test('redirect mode loads no crypto, TLS, zlib or CommonJS lexer', privileged(), async (t) => {
  const topo = await opsTopology(t)
  const server = await startPeerServer(topo, { host: v4.dest, tcp: true })
  t.teardown(server.stop)
  const env = opsEnv('redirect', { EGRESS_DESTINATION: `80 tcp ${v4.dest} ${server.tcpPort as number}\n` })
  noneUnwanted(t, await modulesLoaded(t, topo, env, async () => {
    t.ok((await tcpRequest(topo, { host: v4.routerPod, port: 80, send: 'x' })).ok, 'a redirected connection')
  }))
})

t.test('http-proxy mode, carrying plain HTTP (undici) and a CONNECT tunnel, loads none of them', privileged(), async (t) => {
  const topo = await opsTopology(t)
  const web = await startPeerServer(topo, { host: v4.dest, http: true })
  t.teardown(web.stop)
  const env = opsEnv('http-proxy', { EGRESS_HTTP_PROXY_DESTINATION: `${v4.dest}\n` })
  noneUnwanted(t, await modulesLoaded(t, topo, env, async () => {
    const plain = await httpGet(topo, { url: `http://${v4.dest}:${web.httpPort as number}/`, proxy: `http://${v4.routerPod}:8080` })
    t.equal(plain.status, 200, 'a plain GET through the proxy')
    const r = await topo.exec('client', ['curl', '-sS', '--max-time', '5', '-p', '-x', `http://${v4.routerPod}:8080`, '-o', '/dev/null', '-w', '%{http_code}',
      '--', `http://${v4.dest}:${web.httpPort as number}/`], { timeoutMs: 10_000 })
    t.equal(r.stdout, '200', `a GET through a CONNECT tunnel (${r.stderr.trim()})`)
  }))
})

t.test('dns-proxy mode, resolving a name with its own DNS client, loads none of them', privileged(), async (t) => {
  const topo = await opsTopology(t, { dns: true })
  const server = await startPeerServer(topo, { host: v4.dest, tcp: true })
  t.teardown(server.stop)
  const env = opsEnv('dns-proxy', { EGRESS_DNS_PROXY_DESTINATION: `7000 ${DEST_NAME} ${server.tcpPort as number}\n` })
  noneUnwanted(t, await modulesLoaded(t, topo, env, async () => {
    t.ok((await tcpRequest(topo, { host: v4.routerPod, port: 7000, send: 'x' })).ok, 'a forwarded connection to the resolved name')
  }))
})
