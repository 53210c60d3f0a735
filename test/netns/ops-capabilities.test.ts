/**
 * The systemd units run the daemon as a dynamic, non-root user holding only the capabilities named in their
 * AmbientCapabilities= (CAP_NET_ADMIN and CAP_NET_BIND_SERVICE; not CAP_NET_RAW). Here each mode runs exactly so:
 * setpriv with the capability list read from systemd/egress-router.service, uid and gid 65534, no_new_privs, a
 * bounding set of those capabilities alone. Each must set up (links, sysctls, nft), serve a privileged port
 * where the mode has one, carry real traffic from EGRESS_SOURCE and stop with exit 0.
 */
import t, { type Test } from 'tap'
import { readFileSync } from 'node:fs'
import { fileURLToPath } from 'node:url'
import { startRouter, type RouterProcess } from '../../src/lab/router-process.js'
import type { Topology } from '../../src/lab/topology.js'
import { privileged } from '../helpers/privileged.js'
import { httpGet, startPeerServer, tcpRequest } from '../helpers/peers.js'
import { distMissing } from '../helpers/router-e2e.js'
import { opsEnv, opsTopology, v4 } from '../helpers/ops-e2e.js'

const missing = distMissing()
if (missing !== null) t.fail(missing)

const UNIT = fileURLToPath(new URL('../../systemd/egress-router.service', import.meta.url))
const NOBODY = 65534

/** `CAP_NET_ADMIN CAP_NET_BIND_SERVICE` from the unit → ['net_admin', 'net_bind_service'] */
function unitCapabilities (): string[] {
  const line = readFileSync(UNIT, 'utf8').split('\n').find((l) => l.startsWith('AmbientCapabilities='))
  if (line === undefined) throw new Error(`${UNIT} has no AmbientCapabilities=`)
  return line.slice('AmbientCapabilities='.length).trim().split(/\s+/).map((c) => c.replace(/^CAP_/, '').toLowerCase())
}

const CAPS = unitCapabilities()
/** The bits of those capabilities, as /proc/<pid>/status shows them (CapEff, hex). */
const CAP_BITS: Record<string, number> = { net_bind_service: 10, net_admin: 12, net_raw: 13 }

function asUnitUser (): string[] {
  const list = CAPS.map((c) => `+${c}`).join(',')
  return ['setpriv', `--reuid=${NOBODY}`, `--regid=${NOBODY}`, '--clear-groups',
    `--inh-caps=-all,${list}`, `--ambient-caps=-all,${list}`, `--bounding-set=-all,${list}`, '--no-new-privs']
}

/** Starts the daemon as the unit would; SIGTERM in teardown. */
async function unitDaemon (t: Test, topo: Topology, env: Record<string, string>): Promise<RouterProcess> {
  // startRouter runs the daemon without NODE_OPTIONS, so tap's process-info hook (which would write into the
  // repository as nobody on exit) stays out of it.
  const router = startRouter(topo, env, { wrap: asUnitUser() })
  t.teardown(async () => { await router.stop('SIGTERM', 15_000) })
  try {
    await router.waitReady(20_000)
  } catch (err) {
    throw new Error(`${(err as Error).message}; stderr: ${router.stderr()}; last lines: ${JSON.stringify(router.logs.slice(-5))}`)
  }
  return router
}

/** The daemon process runs as nobody with exactly the unit's capabilities effective. */
function checkIdentity (t: Test, router: RouterProcess): void {
  const status = readFileSync(`/proc/${String(router.child.pid)}/status`, 'utf8')
  const uid = /^Uid:\s+(\d+)\s+(\d+)/m.exec(status)
  t.same([Number(uid?.[1]), Number(uid?.[2])], [NOBODY, NOBODY], 'real and effective uid: nobody')
  const eff = BigInt(`0x${/^CapEff:\s+([0-9a-f]+)/m.exec(status)?.[1] ?? '0'}`)
  const want = CAPS.reduce((acc, c) => acc | (1n << BigInt(CAP_BITS[c] ?? 63)), 0n)
  t.equal(eff.toString(16), want.toString(16), `effective capabilities: exactly ${CAPS.join(', ')}`)
  t.equal(eff & (1n << BigInt(CAP_BITS.net_raw as number)), 0n, 'no CAP_NET_RAW')
  t.match(status, /^NoNewPrivs:\s+1$/m, 'no_new_privs')
}

async function stopsCleanly (t: Test, router: RouterProcess): Promise<void> {
  const exit = await router.stop('SIGTERM', 15_000)
  const warnings = router.logs.filter((l) => (l.level ?? 0) >= 40)
  t.same(exit, { code: 0, signal: null }, `SIGTERM: exit 0 (stderr: ${router.stderr()}; warnings: ${JSON.stringify(warnings)})`)
  t.same(warnings, [], 'no warning or error from start to exit')
}

t.test('the unit\'s capability set names what the daemon needs and no more', async (t) => {
  t.same([...CAPS].sort(), ['net_admin', 'net_bind_service'])
})

t.test('redirect as the unit runs it: nobody + CAP_NET_ADMIN sets up macvlan, sysctls and nft, and redirects', privileged(), async (t) => {
  const topo = await opsTopology(t)
  const server = await startPeerServer(topo, { tcp: { mode: 'hello' } })
  t.teardown(server.stop)
  const router = await unitDaemon(t, topo, opsEnv('redirect', { EGRESS_DESTINATION: `80 tcp ${v4.dest} ${server.tcpPort as number}\n` }))
  checkIdentity(t, router)
  const r = await tcpRequest(topo, { host: v4.routerPod, port: 80, send: 'x' })
  t.ok(r.ok, `redirected: ${JSON.stringify(r)}`)
  if (r.ok) t.equal(r.greeting?.peer.replace(/:\d+$/, ''), v4.source, 'the destination saw EGRESS_SOURCE')
  await stopsCleanly(t, router)
})

t.test('http-proxy as the unit runs it, on port 80 (CAP_NET_BIND_SERVICE)', privileged(), async (t) => {
  const topo = await opsTopology(t)
  const web = await startPeerServer(topo, { http: true })
  t.teardown(web.stop)
  const router = await unitDaemon(t, topo, opsEnv('http-proxy', { EGRESS_HTTP_PROXY_PORT: '80', EGRESS_HTTP_PROXY_DESTINATION: `${v4.dest}\n` }))
  checkIdentity(t, router)
  const r = await httpGet(topo, { url: `http://${v4.dest}:${web.httpPort as number}/unit`, proxy: `http://${v4.routerPod}:80` })
  t.equal(r.status, 200, `proxied through port 80: ${r.stderr}`)
  t.equal((JSON.parse(r.body) as { peer: string }).peer.replace(/:\d+$/, ''), v4.source, 'the destination saw EGRESS_SOURCE')
  await stopsCleanly(t, router)
})

t.test('dns-proxy as the unit runs it, forwarding port 80 (CAP_NET_BIND_SERVICE)', privileged(), async (t) => {
  const topo = await opsTopology(t)
  const server = await startPeerServer(topo, { tcp: { mode: 'hello' } })
  t.teardown(server.stop)
  const router = await unitDaemon(t, topo, opsEnv('dns-proxy', { EGRESS_DNS_PROXY_DESTINATION: `80 ${v4.dest} ${server.tcpPort as number}\n` }))
  checkIdentity(t, router)
  const r = await tcpRequest(topo, { host: v4.routerPod, port: 80, send: 'x' })
  t.ok(r.ok, `forwarded: ${JSON.stringify(r)}`)
  if (r.ok) t.equal(r.greeting?.peer.replace(/:\d+$/, ''), v4.source, 'the destination saw EGRESS_SOURCE')
  await stopsCleanly(t, router)
})
