/**
 * dns-proxy mode end to end: the real daemon (bin/egress-router run) in the router namespace, a real dnsmasq
 * on the LAN answering for the forwards' names, clients in the client namespace, and peer servers in the
 * destination namespace reporting which address each connection reached and from which source.
 */
import t from 'tap'
import { LAB } from '../../src/lab/topology.js'
import { waitFor } from '../../src/lab/wait.js'
import { distMissing } from '../helpers/router-e2e.js'
import { hostOf, startPeerServer, tcpRequest, type PeerServer } from '../helpers/peers.js'
import { privileged } from '../helpers/privileged.js'
import { ALL_DEST, dnsDaemon, dnsTopology, landing, readyz, serversOnOnePort, spread, startDnsmasq, streamClient } from '../helpers/dns-proxy-e2e.js'

const missing = distMissing()
if (missing !== null) t.fail(missing)

const v4 = LAB.v4

t.test('IP and host-name forwards, with and without a target port, reach the destination from EGRESS_SOURCE', privileged(), async (t) => {
  const topo = await dnsTopology(t)
  const a = await startPeerServer(topo, { host: v4.dest, tcp: { mode: 'hello' } })
  t.teardown(a.stop)
  const b = await startPeerServer(topo, { host: v4.destExtra[0], tcp: { mode: 'hello' } })
  t.teardown(b.stop)
  const pa = a.tcpPort as number
  const pb = b.tcpPort as number
  await startDnsmasq(t, topo, { 'svc-a.lab.example': [v4.dest], 'svc-b.lab.example': [v4.destExtra[0]] })
  const forwards = [
    '# IP, the same port',
    `${pa} ${v4.dest}`,
    '# IP, another port',
    `8001 ${v4.dest} ${pa}`,
    '# name, the same port',
    `${pb} svc-b.lab.example`,
    '# name, another port',
    `8002 svc-a.lab.example ${pa}`
  ].join('\n')
  await dnsDaemon(t, topo, forwards)

  const cases = [
    { what: `${pa} → ${v4.dest} (IP, same port)`, port: pa, expect: `${v4.dest}:${pa}`, server: a },
    { what: `8001 → ${v4.dest}:${pa} (IP, target port)`, port: 8001, expect: `${v4.dest}:${pa}`, server: a },
    { what: `${pb} → svc-b.lab.example (name, same port)`, port: pb, expect: `${v4.destExtra[0]}:${pb}`, server: b },
    { what: `8002 → svc-a.lab.example:${pa} (name, target port)`, port: 8002, expect: `${v4.dest}:${pa}`, server: a }
  ]
  for (const c of cases) {
    const l = landing(await tcpRequest(topo, { host: v4.routerPod, port: c.port, send: c.what }))
    t.same(l, { at: c.expect, from: v4.source }, `${c.what}: reached ${c.expect}, which saw EGRESS_SOURCE`)
  }
  const seen = [...a.reports, ...b.reports].filter((r) => r.event === 'connection')
  t.equal(seen.length, cases.length, 'the destinations saw one connection per request')
  t.same(seen.filter((r) => 'peer' in r && hostOf(r.peer) !== v4.source), [], 'and no other source address')
})

t.test('a name with several addresses spreads new connections across them; with one down every connection still succeeds', privileged(), async (t) => {
  const topo = await dnsTopology(t)
  const { port, servers } = await serversOnOnePort(t, topo, ALL_DEST, 'hello')
  await startDnsmasq(t, topo, { 'pool.lab.example': ALL_DEST })
  const router = await dnsDaemon(t, topo, `8000 pool.lab.example ${port}`)
  const known = await router.waitForLog((l) => l.msg === 'destination addresses' && Array.isArray(l.addresses) && l.addresses.length === ALL_DEST.length,
    'the forwarder to know all three addresses')
  t.same([...(known.addresses as string[])].sort(), [...ALL_DEST].sort(), 'the forwarder holds every address of the name')

  const n = 30
  const all = await spread(topo, 8000, n)
  t.comment(`${n} connections, per destination address: ${JSON.stringify(all.counts)}`)
  t.same(all.failures, [], 'every connection succeeded')
  t.same(all.strangers, [], 'every destination saw EGRESS_SOURCE')
  for (const addr of ALL_DEST) {
    // Round robin gives each address n/3; the bound leaves room for dnsmasq reordering its answer between refreshes.
    t.ok((all.counts[addr] ?? 0) >= n / 6, `${addr} got a fair share (${all.counts[addr] ?? 0} of ${n})`)
  }

  const down = v4.destExtra[1]
  await (servers.get(down) as PeerServer).stop()
  const rest = await spread(topo, 8000, n)
  t.comment(`${n} connections with ${down} down, per destination address: ${JSON.stringify(rest.counts)}`)
  t.same(rest.failures, [], `every connection succeeded with ${down} down`)
  t.same(rest.strangers, [], 'every destination saw EGRESS_SOURCE')
  t.equal(rest.counts[down], 0, `none reached ${down}`)
  // The survivors share the load evenly (n/2 each), rather than one of them inheriting the down address's turns.
  for (const addr of ALL_DEST.filter((x) => x !== down)) t.ok((rest.counts[addr] ?? 0) >= n * 0.4, `${addr} took half the load (${rest.counts[addr] ?? 0} of ${n})`)
})

t.test('a changed record moves new connections within TTL + 2 s, and a transfer started before the change completes intact', privileged(), async (t) => {
  const ttlSec = 1
  const topo = await dnsTopology(t)
  const [before, after] = [v4.dest, v4.destExtra[0]]
  const { port, servers } = await serversOnOnePort(t, topo, [before, after], 'sink')
  const dns = await startDnsmasq(t, topo, { 'move.lab.example': [before] }, { ttlSec })
  await dnsDaemon(t, topo, `8000 move.lab.example ${port}`)

  const first = landing(await tcpRequest(topo, { host: v4.routerPod, port: 8000, send: 'before' }))
  t.same(first, { at: `${before}:${port}`, from: v4.source }, 'before the change, connections go to the old address')

  // ~8 s at 6 MiB/s: long enough to span the change and the move.
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

  const r = await long.result
  t.ok(r.ok, `the long transfer completed: ${JSON.stringify(r.error ?? null)}`)
  const closed = await (servers.get(before) as PeerServer).waitForReport((x) => x.event === 'closed' && x.peer === g.peer, { what: 'the old destination to report the long transfer' })
  t.ok(closed.event === 'closed' && closed.error === undefined, 'the old destination saw a clean close')
  if (closed.event === 'closed') {
    t.same(closed.received, r.sent, 'the old destination received every byte sent (sha256 at both ends)')
  }
  t.equal(r.sent.bytes, bytes, 'the client sent all of it')
})

t.test('with dnsmasq stopped, forwarding keeps working on the last good answer', privileged(), async (t) => {
  const topo = await dnsTopology(t)
  const s = await startPeerServer(topo, { host: v4.dest, tcp: { mode: 'hello' } })
  t.teardown(s.stop)
  const port = s.tcpPort as number
  const dns = await startDnsmasq(t, topo, { 'last.lab.example': [v4.dest] })
  const router = await dnsDaemon(t, topo, `8000 last.lab.example ${port}`)
  t.same(landing(await tcpRequest(topo, { host: v4.routerPod, port: 8000 })), { at: `${v4.dest}:${port}`, from: v4.source }, 'works with dnsmasq up')

  await dns.stop()
  // TTL 1 s: the answer expires at once and every refresh fails from now on.
  const stale = await router.waitForLog((l) => l.msg === 'serving the last good DNS answer: every nameserver fails', 'the forwarder to serve the stale answer', 15_000)
  t.ok(stale, 'the daemon says it serves the last good answer')
  const results = []
  for (let i = 0; i < 5; i++) results.push(landing(await tcpRequest(topo, { host: v4.routerPod, port: 8000 })))
  t.same(results, Array(5).fill({ at: `${v4.dest}:${port}`, from: v4.source }), 'every connection still reaches the last good address from EGRESS_SOURCE')
  const ready = await readyz(topo)
  t.equal(ready.status, 200, `still ready while serving the last good answer: ${JSON.stringify(ready.body)}`)
})

t.test('a name that does not resolve at start-up leaves the daemon up and not ready until dnsmasq learns it', privileged(), async (t) => {
  const topo = await dnsTopology(t)
  const s = await startPeerServer(topo, { host: v4.dest, tcp: { mode: 'hello' } })
  t.teardown(s.stop)
  const port = s.tcpPort as number
  const dns = await startDnsmasq(t, topo, { 'other.lab.example': [v4.destExtra[0]] })
  const router = await dnsDaemon(t, topo, `8000 late.lab.example ${port}\n8001 ${v4.dest} ${port}`, { ready: false })
  await router.waitForLog((l) => l.event === 'listening' && l.kind === 'dns-forward' && l.port === 8000, 'the forward listener to open')

  const notReady = await waitFor(async () => {
    const r = await readyz(topo)
    return r.body !== null && r.body.checks.names !== undefined ? r : undefined
  }, { what: '/readyz to report on the names', timeoutMs: 10_000, intervalMs: 100 })
  t.equal(notReady.status, 503, '/readyz answers 503')
  t.equal(notReady.body?.ready, false, 'not ready')
  t.match(notReady.body?.checks.names, { ok: false, detail: /late\.lab\.example/ }, 'the names check names the name')
  const warned = await router.waitForLog((l) => l.target === 'late.lab.example' && typeof l.msg === 'string' && l.msg.includes('does not resolve'), 'the daemon to log that the name does not resolve')
  t.equal(warned.level, 40, `the daemon warns that late.lab.example does not resolve: ${String(warned.msg)}`)
  t.equal(router.child.exitCode, null, 'the daemon is still running')
  t.notOk(router.logs.some((l) => l.event === 'readiness' && l.ready === true), 'it never said ready')
  t.same(landing(await tcpRequest(topo, { host: v4.routerPod, port: 8001 })), { at: `${v4.dest}:${port}`, from: v4.source }, 'the forward to an IP works meanwhile')

  await dns.setHosts({ 'other.lab.example': [v4.destExtra[0]], 'late.lab.example': [v4.dest] })
  await router.waitReady(10_000)
  t.pass('the daemon logged readiness: ready once the name resolved')
  const ready = await readyz(topo)
  t.equal(ready.status, 200, `/readyz answers 200: ${JSON.stringify(ready.body)}`)
  t.same(landing(await tcpRequest(topo, { host: v4.routerPod, port: 8000 })), { at: `${v4.dest}:${port}`, from: v4.source }, 'the forward to the name works')
})

t.test('a client that half-closes before the destination has accepted still has its FIN forwarded', privileged(), async (t) => {
  const topo = await dnsTopology(t)
  // sink: the destination answers only once it has seen the client's FIN.
  const s = await startPeerServer(topo, { host: v4.dest, tcp: { mode: 'sink' } })
  t.teardown(s.stop)
  const port = s.tcpPort as number
  // Drop each connection's first SYN at the destination: the router's connect completes only on the SYN
  // retransmit a second later, long after the client's FIN has reached the router.
  await topo.execOk('dest', ['nft', '-f', '-'], {
    input: `table inet erdnse2e_syn {
      set seen { type ipv4_addr . inet_service; flags dynamic; timeout 1m; }
      chain input {
        type filter hook input priority 0;
        tcp dport ${port} tcp flags & (syn | ack) == syn ip saddr . tcp sport @seen accept
        tcp dport ${port} tcp flags & (syn | ack) == syn add @seen { ip saddr . tcp sport } drop
      }
    }\n`
  })
  await startDnsmasq(t, topo, { 'fin.lab.example': [v4.dest] })
  await dnsDaemon(t, topo, `8000 fin.lab.example ${port}\n8001 ${v4.dest} ${port}`)
  for (const listen of [8000, 8001]) {
    // No data: peer-client sends its FIN right after connecting.
    const r = await tcpRequest(topo, { host: v4.routerPod, port: listen, timeoutMs: 8_000 })
    t.same(landing(r), { at: `${v4.dest}:${port}`, from: v4.source }, `port ${listen}: the destination answered after the FIN`)
    t.match(r.ok ? r.body.text : '', /"bytes":0/, `port ${listen}: the destination saw an empty, finished stream`)
  }
  const synDrops = (await topo.execOk('dest', ['nft', 'list', 'set', 'inet', 'erdnse2e_syn', 'seen'])).stdout
  t.match(synDrops, new RegExp(`${v4.source.replace(/\./g, '\\.')} \\. \\d+`), 'the first SYNs were dropped, so the FIN came before the connect completed')
})
