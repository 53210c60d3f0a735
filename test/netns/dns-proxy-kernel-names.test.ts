/**
 * dns-proxy kernel forwards to host names (EGRESS_DNS_PROXY_FORWARDING=kernel), end to end: the real daemon in the
 * router namespace, a real dnsmasq on the LAN whose records the tests change, peer servers in the destination
 * namespace. The DNAT rule of a name follows its answers: several addresses are taken in turn, a changed record
 * moves new connections while established ones finish intact, a name that does not resolve (yet, or any more)
 * refuses connections and keeps the daemon not ready, and the last good answer is kept while dnsmasq is down.
 */
import t from 'tap'
import { LAB, type Topology } from '../../src/lab/topology.js'
import { waitFor } from '../../src/lab/wait.js'
import { distMissing } from '../helpers/router-e2e.js'
import { hostOf, startPeerServer, tcpRequest, type PeerServer } from '../helpers/peers.js'
import { privileged } from '../helpers/privileged.js'
import { ALL_DEST, dnsDaemon, dnsTopology, landing, readyz, serversOnOnePort, spread, startDnsmasq, streamClient } from '../helpers/dns-proxy-e2e.js'

const missing = distMissing()
if (missing !== null) t.fail(missing)

const v4 = LAB.v4
const KERNEL = { env: { EGRESS_DNS_PROXY_FORWARDING: 'kernel' } }

/** Our DNAT rules as nft prints them. */
async function natRules (topo: Topology): Promise<string> {
  return (await topo.exec('router', ['nft', 'list', 'chain', 'ip', 'egress_router', 'nat_prerouting'])).stdout
}

/** The TCP ports something listens on in the router namespace. */
async function listens (topo: Topology, port: number): Promise<boolean> {
  const r = await topo.exec('router', ['ss', '-Htln', 'sport', `= :${port}`])
  return r.stdout.trim() !== ''
}

t.test('a name with several addresses: one DNAT rule takes them in turn, every destination sees EGRESS_SOURCE', privileged(), async (t) => {
  const topo = await dnsTopology(t)
  const { port } = await serversOnOnePort(t, topo, ALL_DEST, 'hello')
  await startDnsmasq(t, topo, { 'pool.lab.example': ALL_DEST })
  const router = await dnsDaemon(t, topo, `8000 pool.lab.example ${port}`, KERNEL)
  const logged = router.logs.find((l) => l.event === 'kernel-forward' && l.target === 'pool.lab.example')
  t.same(logged?.addresses, [...ALL_DEST].sort(), 'the daemon says where the name points, before it is ready')
  t.match(await natRules(topo), `tcp dport 8000 counter packets`, 'the rule is in')
  t.match(await natRules(topo), `dnat to numgen inc mod ${ALL_DEST.length} map`, 'as a rotation over the addresses')
  t.notOk(await listens(topo, 8000), 'nothing listens on 8000')

  const n = 30
  const all = await spread(topo, 8000, n)
  t.comment(`${n} connections, per destination address: ${JSON.stringify(all.counts)}`)
  t.same(all.failures, [], 'every connection succeeded')
  t.same(all.strangers, [], 'every destination saw EGRESS_SOURCE')
  // numgen inc: strict turns (the rule is not rewritten while the answer keeps the same addresses)
  for (const addr of ALL_DEST) t.equal(all.counts[addr], n / ALL_DEST.length, `${addr} got its turns (${all.counts[addr] ?? 0} of ${n})`)
})

t.test('a changed record moves new connections within TTL + 2 s; a transfer through the old address completes intact', privileged(), async (t) => {
  const ttlSec = 1
  const topo = await dnsTopology(t)
  const [before, after] = [v4.dest, v4.destExtra[0]]
  const { port, servers } = await serversOnOnePort(t, topo, [before, after], 'sink')
  const dns = await startDnsmasq(t, topo, { 'move.lab.example': [before] }, { ttlSec })
  const router = await dnsDaemon(t, topo, `8000 move.lab.example ${port}`, KERNEL)

  const first = landing(await tcpRequest(topo, { host: v4.routerPod, port: 8000, send: 'before' }))
  t.same(first, { at: `${before}:${port}`, from: v4.source }, 'before the change, connections go to the old address')

  // ~8 s at 6 MiB/s: long enough to span the change and the move
  const bytes = 48 * 1024 * 1024
  const long = streamClient(t, topo, { host: v4.routerPod, port: 8000, sendBytes: bytes, rate: 6 * 1024 * 1024, timeoutMs: 60_000 })
  const g = await long.greeting
  t.equal(hostOf(g.local), before, 'the long transfer goes to the old address')

  await dns.setHosts({ 'move.lab.example': [after] })
  const changedAt = Date.now()
  const moved = await waitFor(async () => {
    const l = landing(await tcpRequest(topo, { host: v4.routerPod, port: 8000, send: 'after?', timeoutMs: 2_000 }))
    return 'at' in l && hostOf(l.at) === after ? l : undefined
  }, { what: `new connections to reach ${after} within TTL + 2 s`, timeoutMs: ttlSec * 1000 + 2_000, intervalMs: 50 })
  t.comment(`new connections moved ${Date.now() - changedAt} ms after dnsmasq changed the record (TTL ${ttlSec} s)`)
  t.equal(moved.from, v4.source, 'the new address sees EGRESS_SOURCE')
  t.notOk(long.finished(), 'the long transfer was still running when new connections had moved')
  t.match(await natRules(topo), `dnat to ${after}:${port}`, 'the rule points at the new address')
  t.ok(router.logs.some((l) => l.event === 'kernel-forward' && Array.isArray(l.addresses) && l.addresses.join() === after), 'and the daemon said so')

  const r = await long.result
  t.ok(r.ok, `the long transfer completed: ${JSON.stringify(r.error ?? null)}`)
  const closed = await (servers.get(before) as PeerServer).waitForReport((x) => x.event === 'closed' && x.peer === g.peer, { what: 'the old destination to report the long transfer' })
  t.ok(closed.event === 'closed' && closed.error === undefined, 'the old destination saw a clean close')
  if (closed.event === 'closed') t.same(closed.received, r.sent, 'the old destination received every byte sent (sha256 at both ends)')
  t.equal(r.sent.bytes, bytes, 'the client sent all of it')
})

t.test('a name that does not resolve refuses connections and keeps the daemon not ready, at start-up and when it goes away', privileged(), async (t) => {
  const topo = await dnsTopology(t)
  const s = await startPeerServer(topo, { host: v4.dest, tcp: { mode: 'hello' } })
  t.teardown(s.stop)
  const port = s.tcpPort as number
  const dns = await startDnsmasq(t, topo, { 'other.lab.example': [v4.destExtra[0]] })
  const router = await dnsDaemon(t, topo, `8000 late.lab.example ${port}\n8001 ${v4.dest} ${port}`, { ...KERNEL, ready: false })

  const notReady = await waitFor(async () => {
    const r = await readyz(topo)
    return r.body !== null && r.body.checks.names !== undefined && r.body.checks.rules?.ok === true ? r : undefined
  }, { what: '/readyz to report on the names', timeoutMs: 10_000, intervalMs: 100 })
  t.equal(notReady.status, 503, '/readyz answers 503')
  t.match(notReady.body?.checks.names, { ok: false, detail: /late\.lab\.example/ }, 'the names check names the name')
  const warned = await router.waitForLog((l) => l.target === 'late.lab.example' && typeof l.msg === 'string' && l.msg.includes('does not resolve'), 'the daemon to log that the name does not resolve')
  t.equal(warned.level, 40, `the daemon warns: ${String(warned.msg)}`)
  const refused = await tcpRequest(topo, { host: v4.routerPod, port: 8000, timeoutMs: 2_000 })
  t.equal(refused.ok ? 'connected' : refused.error.code, 'ECONNREFUSED', 'its port refuses connections')
  t.same(landing(await tcpRequest(topo, { host: v4.routerPod, port: 8001 })), { at: `${v4.dest}:${port}`, from: v4.source }, 'the forward to an IP works meanwhile')

  await dns.setHosts({ 'other.lab.example': [v4.destExtra[0]], 'late.lab.example': [v4.dest] })
  await router.waitForLog((l) => l.event === 'readiness' && l.ready === true, 'the daemon to become ready once the name resolves', 15_000)
  t.same(landing(await tcpRequest(topo, { host: v4.routerPod, port: 8000 })), { at: `${v4.dest}:${port}`, from: v4.source }, 'then 8000 reaches it from EGRESS_SOURCE')

  // The record goes: NXDOMAIN. The resolver drops a set that worked only once the name is confirmed gone (three
  // negative answers over at least 10 s, src/dns/cache.ts); then the rule goes and the port refuses again.
  await dns.setHosts({ 'other.lab.example': [v4.destExtra[0]] })
  const gone = await router.waitForLog((l) => l.event === 'kernel-forward' && l.target === 'late.lab.example' && Array.isArray(l.addresses) && l.addresses.length === 0, 'the daemon to drop the rule of a name that is gone', 40_000)
  t.equal(gone.level, 40, `it warns: ${String(gone.msg)}`)
  const again = await tcpRequest(topo, { host: v4.routerPod, port: 8000, timeoutMs: 2_000 })
  t.equal(again.ok ? 'connected' : again.error.code, 'ECONNREFUSED', 'the port refuses connections again')
  t.notMatch(await natRules(topo), 'dport 8000', 'and has no rule')
  const after = await readyz(topo)
  t.equal(after.status, 503, `not ready again: ${JSON.stringify(after.body?.checks.names)}`)
})

t.test('with dnsmasq stopped, the rule keeps the last good answer', privileged(), async (t) => {
  const topo = await dnsTopology(t)
  const s = await startPeerServer(topo, { host: v4.dest, tcp: { mode: 'hello' } })
  t.teardown(s.stop)
  const port = s.tcpPort as number
  const dns = await startDnsmasq(t, topo, { 'last.lab.example': [v4.dest] })
  await dnsDaemon(t, topo, `8000 last.lab.example ${port}`, KERNEL)
  t.same(landing(await tcpRequest(topo, { host: v4.routerPod, port: 8000 })), { at: `${v4.dest}:${port}`, from: v4.source }, 'works with dnsmasq up')
  const rules = await natRules(topo)

  await dns.stop()
  // TTL 1 s: the answer expires at once and every refresh fails from now on; give it a few refresh rounds
  await new Promise((resolve) => setTimeout(resolve, 4_000))
  const results = []
  for (let i = 0; i < 5; i++) results.push(landing(await tcpRequest(topo, { host: v4.routerPod, port: 8000 })))
  t.same(results, Array(5).fill({ at: `${v4.dest}:${port}`, from: v4.source }), 'every connection still reaches the last good address from EGRESS_SOURCE')
  t.equal((await natRules(topo)).replace(/packets \d+ bytes \d+/g, ''), rules.replace(/packets \d+ bytes \d+/g, ''), 'the rule is as it was')
  const ready = await readyz(topo)
  t.equal(ready.status, 200, `still ready: ${JSON.stringify(ready.body)}`)
})
