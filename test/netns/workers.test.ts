/**
 * EGRESS_WORKERS=2 end to end, with the real daemon in the router namespace: both workers accept on the
 * shared listening sockets (seen with `ss -p` while connections are held), every connection reaches the
 * destination from EGRESS_SOURCE, /metrics adds the workers' counts up, a worker killed with SIGKILL is
 * replaced while the other goes on serving, a SIGHUP reaches every worker (the new port is open in each
 * one), SIGTERM drains and stops them all, a worker that cannot open its listeners fails the start
 * (exit 1, everything rolled back), and workers whose daemon was killed exit too.
 */
import { readFileSync } from 'node:fs'
import { fileURLToPath } from 'node:url'
import { createInterface } from 'node:readline'
import t, { type Test } from 'tap'
import { startRouter, type LogLine, type RouterProcess } from '../../src/lab/router-process.js'
import type { Topology } from '../../src/lab/topology.js'
import { waitFor } from '../../src/lab/wait.js'
import { privileged } from '../helpers/privileged.js'
import { httpGet, startPeerServer, tcpRequest, hostOf, type PeerServer } from '../helpers/peers.js'
import { distMissing, leftovers } from '../helpers/router-e2e.js'
import { configFile, fixtureEnv, metric, opsDaemon, opsEnv, opsTopology, scrape, v4 } from '../helpers/ops-e2e.js'

const missing = distMissing()
if (missing !== null) t.fail(missing)

const IDLE_CLIENT = fileURLToPath(new URL('../../dist/bench/idle-client.js', import.meta.url))
const HELD = 64

async function server (t: Test, topo: Topology, opts: Parameters<typeof startPeerServer>[1]): Promise<PeerServer> {
  const s = await startPeerServer(topo, opts)
  t.teardown(s.stop)
  return s
}

/** The pids of the processes holding established connections on the router's side of `port`, with counts. */
async function acceptedBy (topo: Topology, port: number): Promise<Map<number, number>> {
  const r = await topo.exec('router', ['ss', '-Htnp', 'state', 'established', `( sport = :${port} )`])
  const counts = new Map<number, number>()
  for (const m of r.stdout.matchAll(/pid=(\d+)/g)) counts.set(Number(m[1]), (counts.get(Number(m[1])) ?? 0) + 1)
  return counts
}

/** The pids of the processes holding the listening socket on `port`. */
async function listenersOf (topo: Topology, port: number): Promise<Set<number>> {
  const r = await topo.exec('router', ['ss', '-Htlnp', `( sport = :${port} )`])
  return new Set([...r.stdout.matchAll(/pid=(\d+)/g)].map((m) => Number(m[1])))
}

/** idle-client in the client namespace: holds `n` connections to host:port open until stopped. */
async function hold (t: Test, topo: Topology, host: string, port: number, n: number): Promise<{ total: number, failed: number, firstError?: string }> {
  const child = topo.spawn('client', [process.execPath, IDLE_CLIENT, host, String(port)], { env: fixtureEnv(), stdio: ['pipe', 'pipe', 'pipe'] })
  t.teardown(() => { child.kill('SIGKILL') })
  const lines = createInterface({ input: child.stdout as NodeJS.ReadableStream })
  const report = new Promise<{ total: number, failed: number, firstError?: string }>((resolve, reject) => {
    lines.once('line', (l) => { resolve(JSON.parse(l)) })
    child.once('close', (code) => { reject(new Error(`idle-client exited (${String(code)})`)) })
  })
  child.stdin?.write(`open ${n} 20000\n`)
  return await report
}

function pidsOf (line: LogLine): number[] {
  return (line.pids as number[] | undefined) ?? []
}

function alive (pid: number): boolean {
  try { process.kill(pid, 0); return true } catch { return false }
}

t.test('dns-proxy with EGRESS_WORKERS=2: both accept, one killed is replaced, SIGHUP reaches both, SIGTERM stops both', privileged(), async (t) => {
  const topo = await opsTopology(t)
  const sink = await server(t, topo, { host: v4.dest, tcp: { mode: 'sink' } })
  const hello = await server(t, topo, { host: v4.destExtra[0], tcp: { mode: 'hello' } })
  const sinkPort = sink.tcpPort as number
  const helloPort = hello.tcpPort as number
  const forwards = configFile(t, 'forwards', `8000 ${v4.dest} ${sinkPort}\n8001 ${v4.destExtra[0]} ${helloPort}\n`)
  const router = await opsDaemon(t, topo, opsEnv('dns-proxy', { EGRESS_DNS_PROXY_DESTINATION_FILE: forwards.path, EGRESS_WORKERS: '2', EGRESS_DRAIN_TIMEOUT: '2s' }))

  const listening = await router.waitForLog((l) => l.event === 'listening' && l.workers === 2, 'the workers line')
  const pids = pidsOf(listening)
  t.equal(new Set(pids).size, 2, `two worker processes: ${pids.join(', ')}`)
  t.ok(pids.every((p) => p !== router.child.pid && alive(p)), 'they are other processes than the daemon, and alive')

  const held = await hold(t, topo, v4.routerPod, 8000, HELD)
  t.same([held.total, held.failed], [HELD, 0], `${HELD} connections held through port 8000 (${held.firstError ?? 'no error'})`)
  // a connection the client sees as open may still sit in the accept queue (no process holds it yet)
  const by = await waitFor(async () => {
    const counts = await acceptedBy(topo, 8000)
    return [...counts.values()].reduce((a, b) => a + b, 0) >= HELD ? counts : undefined
  }, { what: `the workers to accept all ${HELD}`, timeoutMs: 10_000, intervalMs: 50 })
  t.same([...by.keys()].sort(), [...pids].sort(), `both workers accepted some: ${JSON.stringify([...by])}`)
  t.equal([...by.values()].reduce((a, b) => a + b, 0), HELD, 'and between them all of them')
  const reached = await waitFor(() => {
    const from = sink.reports.filter((r) => r.event === 'connection').map((r) => hostOf(r.peer))
    return from.length >= HELD ? from : undefined
  }, { what: `${HELD} connections at the destination`, timeoutMs: 10_000, intervalMs: 50 })
  t.same([...new Set(reached)], [v4.source], 'every one reached the destination from EGRESS_SOURCE')

  const samples = await scrape(topo)
  t.equal(metric(samples, 'egress_router_connections_active', { mode: 'dns-proxy', listener: '8000' }), HELD, '/metrics adds up both workers\' open connections')
  t.equal(metric(samples, 'egress_router_workers', { state: 'running' }), 2, 'egress_router_workers{state="running"} 2')
  t.equal(metric(samples, 'egress_router_worker_restarts_total'), 0, 'no restarts yet')
  t.equal(metric(samples, 'egress_router_ready'), 1, 'the primary\'s own metrics are there too')

  // SIGKILL one worker: it is replaced; the other never stops serving
  const [victim, survivor] = pids as [number, number]
  const seen = router.logs.length
  process.kill(victim, 'SIGKILL')
  const during = await Promise.all(Array.from({ length: 10 }, async (_, i) => await tcpRequest(topo, { host: v4.routerPod, port: 8001, send: `during ${i}` })))
  t.same(during.filter((r) => !r.ok).map((r) => !r.ok && r.error.code), [], 'connections made right after the kill are served')
  const exit = await router.waitForLog((l) => router.logs.indexOf(l) >= seen && l.event === 'worker-exit', 'the worker-exit line')
  t.same([exit.pid, exit.signal], [victim, 'SIGKILL'], 'the exit is logged with the pid and the signal')
  const replaced = await router.waitForLog((l) => router.logs.indexOf(l) >= seen && l.event === 'worker-started', 'the replacement')
  const fresh = replaced.pid as number
  t.ok(fresh !== victim && fresh !== survivor && alive(fresh), `a new worker (pid ${fresh}) replaced it`)
  const after = await acceptedBy(topo, 8000)
  t.notOk(after.has(victim), 'the killed worker\'s connections are gone with it')
  t.equal(after.get(survivor), by.get(survivor), 'the other worker\'s connections are all still open')
  const restarts = await waitFor(async () => metric(await scrape(topo), 'egress_router_worker_restarts_total') === 1 ? 1 : undefined,
    { what: 'egress_router_worker_restarts_total 1', timeoutMs: 5_000, intervalMs: 100 })
  t.equal(restarts, 1, 'egress_router_worker_restarts_total 1')
  const readyz = await waitFor(async () => {
    const r = JSON.parse((await topo.exec('router', ['curl', '-sS', '--max-time', '3', 'http://127.0.0.1:9090/readyz'])).stdout) as { ready: boolean, checks: Record<string, { ok: boolean, detail: string }> }
    return r.checks.listeners?.detail === '' ? r : undefined
  }, { what: '/readyz with both workers serving again', timeoutMs: 5_000, intervalMs: 100 })
  t.equal(readyz.ready, true, '/readyz: ready, both workers serving')

  // SIGHUP: a new forward, opened by every worker (the replacement included)
  const other = await server(t, topo, { host: v4.dest, tcp: { mode: 'hello' } })
  forwards.write(`8000 ${v4.dest} ${sinkPort}\n8001 ${v4.destExtra[0]} ${helloPort}\n8002 ${v4.dest} ${String(other.tcpPort)}\n`)
  const before = router.logs.length
  process.kill(router.child.pid as number, 'SIGHUP')
  const verdict = await router.waitForLog((l) => router.logs.indexOf(l) >= before && ['reloaded', 'reload-rejected', 'reload-failed'].includes(String(l.event)), 'the reload')
  t.equal(verdict.event, 'reloaded', `the reload applied: ${String(verdict.msg)}`)
  const on8002 = await listenersOf(topo, 8002)
  t.ok(on8002.has(survivor) && on8002.has(fresh), `both workers listen on the new port: ${[...on8002].join(', ')}`)
  const through = await Promise.all(Array.from({ length: 6 }, async (_, i) => await tcpRequest(topo, { host: v4.routerPod, port: 8002, send: `new ${i}` })))
  t.same(through.map((r) => r.ok && r.greeting !== null ? hostOf(r.greeting.peer) : 'failed'), Array(6).fill(v4.source), 'the new forward carries connections from EGRESS_SOURCE')

  // SIGTERM: the primary drains every worker and exits 0; nothing of ours is left
  const stopped = await router.stop('SIGTERM', 20_000)
  // seen once under the full suite's load (exit 1, no stopped line, both workers still alive at that moment):
  // the daemon's stderr and last lines say why, in the log that CI keeps
  const why = `stderr: ${router.stderr().trim().slice(-2000)}; last log: ${JSON.stringify(router.logs.slice(-8)).slice(-3000)}`
  t.same(stopped, { code: 0, signal: null }, `exit 0 after SIGTERM (${why})`)
  t.ok(router.logs.some((l) => l.event === 'stopped'), 'the stopped line')
  t.same([survivor, fresh].filter(alive), [], 'no worker outlives the daemon')
})

t.test('http-proxy with EGRESS_WORKERS=2: requests through both, one ACL, decisions added up', privileged(), async (t) => {
  const topo = await opsTopology(t)
  const web = await server(t, topo, { host: v4.dest, http: true })
  const router = await opsDaemon(t, topo, opsEnv('http-proxy', { EGRESS_HTTP_PROXY_DESTINATION: `${v4.dest}`, EGRESS_WORKERS: '2', EGRESS_HTTP_PROXY_ACCESS_LOG: 'off' }))
  const listening = await router.waitForLog((l) => l.event === 'listening' && l.workers === 2, 'the workers line')
  t.equal(new Set(pidsOf(listening)).size, 2, 'two workers')
  const proxy = `http://${v4.routerPod}:8080`
  const n = 12
  const allowed = await Promise.all(Array.from({ length: n }, async (_, i) => await httpGet(topo, { url: `http://${v4.dest}:${String(web.httpPort)}/w${i}`, proxy })))
  t.same(allowed.map((r) => r.status), Array(n).fill(200), `${n} GETs through the proxy: 200`)
  const denied = await httpGet(topo, { url: `http://${v4.destExtra[0]}:${String(web.httpPort)}/`, proxy })
  t.equal(denied.status, 403, 'a destination outside the ACL is denied by whichever worker took it')
  const requests = web.reports.filter((r) => r.event === 'request')
  t.equal(requests.length, n, 'the destination saw each allowed request once')
  t.same([...new Set(requests.map((r) => hostOf(r.peer)))], [v4.source], 'from EGRESS_SOURCE')
  const samples = await scrape(topo)
  t.equal(metric(samples, 'egress_router_acl_decisions_total', { action: 'allow' }), n, 'the allow decisions of both workers add up')
  t.equal(metric(samples, 'egress_router_acl_decisions_total', { action: 'deny' }), 1, 'and the one deny')
  t.same(await router.stop('SIGTERM', 20_000), { code: 0, signal: null }, 'SIGTERM: exit 0')
})

t.test('a worker that cannot open its listener fails the start: exit 1, workers gone, nothing left behind', privileged(), async (t) => {
  const topo = await opsTopology(t)
  // the port is taken in the router namespace before the daemon starts
  const squatter = topo.spawn('router', ['socat', 'TCP-LISTEN:8000,reuseaddr,fork', 'SYSTEM:true'], { stdio: ['ignore', 'ignore', 'ignore'] })
  t.teardown(() => { squatter.kill('SIGKILL') })
  await waitFor(async () => (await listenersOf(topo, 8000)).size > 0 ? true : undefined, { what: 'the squatter on 8000', timeoutMs: 5_000, intervalMs: 50 })
  const router: RouterProcess = startRouter(topo, opsEnv('dns-proxy', { EGRESS_DNS_PROXY_DESTINATION: `8000 ${v4.dest} 80`, EGRESS_WORKERS: '2' }))
  t.teardown(async () => { await router.stop('SIGKILL', 5_000) })
  const exited = await router.exited
  t.equal(exited.code, 1, 'exit 1')
  const failed = router.logs.find((l) => l.event === 'setup-failed')
  t.match(String(failed?.msg), /^2 workers failed: worker \d+: .*8000.*EADDRINUSE|^2 workers failed: worker \d+: .*8000.*in use/i, `the failure names the step and the port: ${String(failed?.msg)}`)
  const started = router.logs.filter((l) => l.event === 'worker-started').length
  t.equal(started, 0, 'no worker reported serving')
  t.same(await leftovers(topo), [], 'the network and the rules are rolled back')
  const inNs = (await topo.exec('router', ['ip', 'netns', 'pids', topo.ns.router])).stdout.split('\n').filter((p) => p !== '')
  const ours = inNs.filter((pid) => {
    try { return readFileSync(`/proc/${pid}/cmdline`, 'latin1').includes('egress-router') } catch { return false }
  })
  t.same(ours, [], 'no egress-router process (worker or daemon) is left in the namespace')
})

t.test('workers whose daemon is killed (SIGKILL) exit on their own: none is left holding the ports', privileged(), async (t) => {
  const topo = await opsTopology(t)
  const hello = await server(t, topo, { host: v4.dest, tcp: { mode: 'hello' } })
  const router = await opsDaemon(t, topo, opsEnv('dns-proxy', { EGRESS_DNS_PROXY_DESTINATION: `8000 ${v4.dest} ${String(hello.tcpPort)}`, EGRESS_WORKERS: '2', EGRESS_DRAIN_TIMEOUT: '1s' }))
  const pids = pidsOf(await router.waitForLog((l) => l.event === 'listening' && l.workers === 2, 'the workers line'))
  t.equal(pids.length, 2, 'two workers')
  process.kill(router.child.pid as number, 'SIGKILL')
  const gone = await waitFor(() => pids.every((p) => !alive(p)) ? true : undefined, { what: 'the orphaned workers to exit', timeoutMs: 10_000, intervalMs: 50 })
  t.ok(gone, 'both workers exited once the IPC channel to the daemon closed')
  t.same([...await listenersOf(topo, 8000)], [], 'nothing listens on the forward port any more')
})

t.test('a worker killed and a SIGHUP at once: the replacement and the other worker both end up on the new configuration', privileged(), async (t) => {
  const topo = await opsTopology(t)
  const hello = await server(t, topo, { host: v4.dest, tcp: { mode: 'hello' } })
  const port = String(hello.tcpPort)
  const forwards = configFile(t, 'forwards', `8000 ${v4.dest} ${port}\n`)
  const router = await opsDaemon(t, topo, opsEnv('dns-proxy', { EGRESS_DNS_PROXY_DESTINATION_FILE: forwards.path, EGRESS_WORKERS: '2', EGRESS_DRAIN_TIMEOUT: '1s' }))
  const [victim, survivor] = pidsOf(await router.waitForLog((l) => l.event === 'listening' && l.workers === 2, 'the workers line')) as [number, number]
  const seen = router.logs.length
  forwards.write(`8000 ${v4.dest} ${port}\n8003 ${v4.dest} ${port}\n`)
  process.kill(victim, 'SIGKILL')
  process.kill(router.child.pid as number, 'SIGHUP')
  const fresh = (await router.waitForLog((l) => router.logs.indexOf(l) >= seen && l.event === 'worker-started', 'the replacement')).pid as number
  const verdict = await router.waitForLog((l) => router.logs.indexOf(l) >= seen && ['reloaded', 'reload-rejected', 'reload-failed'].includes(String(l.event)), 'the reload')
  t.equal(verdict.event, 'reloaded', `the reload applied: ${String(verdict.msg)}`)
  const on8003 = await waitFor(async () => {
    const pids = await listenersOf(topo, 8003)
    return pids.has(survivor) && pids.has(fresh) ? pids : undefined
  }, { what: `both workers (${survivor}, ${fresh}) on port 8003`, timeoutMs: 5_000, intervalMs: 50 })
  t.ok(on8003.has(fresh), `the replacement (pid ${fresh}) listens on the port the reload added`)
  t.notOk(router.logs.some((l) => l.event === 'reload-failed'), 'no worker failed the configuration')
})
