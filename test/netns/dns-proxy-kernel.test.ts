/**
 * dns-proxy mode with EGRESS_DNS_PROXY_FORWARDING=kernel, end to end: the real daemon in the router namespace,
 * dnsmasq on the LAN, peer servers in the destination namespace. Every forward is a DNAT rule, those to host names
 * included (no socket of the daemon carries them: nothing listens on their ports, their nft counters move); every
 * destination sees EGRESS_SOURCE. SIGHUP moves, removes and adds kernel forwards while connections through them are
 * in flight, and those connections finish intact. With an IPv6 EGRESS_SOURCE the rules are in the ip6 table. How a
 * host name's rule follows its answers is in dns-proxy-kernel-names.test.ts.
 */
import t, { type Test } from 'tap'
import { LAB, type Topology } from '../../src/lab/topology.js'
import { privileged } from '../helpers/privileged.js'
import { startPeerServer, tcpRequest, type PeerServer } from '../helpers/peers.js'
import { landing } from '../helpers/dns-proxy-e2e.js'
import { daemon, distMissing, redirectEnv, topology } from '../helpers/router-e2e.js'
import { configFile, DEST_NAME, metric, OTHER_NAME, opsDaemon, opsEnv, opsTopology, reaches, reload, scrape, startTransfer, survives, v4 } from '../helpers/ops-e2e.js'

const missing = distMissing()
if (missing !== null) t.fail(missing)

const other = v4.destExtra[0]
const MiB = 1024 * 1024
/** 32 MiB at 16 MiB/s: about 2 s, in flight across the reload */
const SIZE = 32 * MiB
const RATE = 16 * MiB

async function server (t: Test, topo: Topology, host: string, opts: Parameters<typeof startPeerServer>[1]): Promise<PeerServer> {
  const s = await startPeerServer(topo, { ...opts, host })
  t.teardown(s.stop)
  return s
}

/** The TCP ports something listens on in the router namespace. */
async function listening (topo: Topology): Promise<Set<number>> {
  const r = await topo.exec('router', ['ss', '-Htln'])
  return new Set(r.stdout.split('\n').map((l) => /:(\d+)\s/.exec(l.split(/\s+/)[3] + ' ')?.[1]).filter((p) => p !== undefined).map(Number))
}

/** Packets counted by our DNAT rule for a port (nft -j), or null without such a rule. */
async function dnatPackets (topo: Topology, port: number): Promise<number | null> {
  const r = await topo.exec('router', ['nft', '-j', 'list', 'chain', 'ip', 'egress_router', 'nat_prerouting'])
  if (r.code !== 0) return null
  const items = (JSON.parse(r.stdout) as { nftables: Array<{ rule?: { expr: Array<Record<string, unknown>> } }> }).nftables
  for (const item of items) {
    const expr = item.rule?.expr
    if (expr === undefined) continue
    const dport = expr.some((e) => JSON.stringify(e).includes('"dport"') && JSON.stringify(e).includes(`"right":${port}`))
    const counter = expr.find((e) => 'counter' in e)?.counter as { packets: number } | undefined
    if (dport && counter !== undefined) return counter.packets
  }
  return null
}

t.test('kernel forwarding: every forward, the host name too, is a DNAT rule with no socket of the daemon; all leave from EGRESS_SOURCE', privileged(), async (t) => {
  const topo = await opsTopology(t, { dns: true })
  const a = await server(t, topo, v4.dest, { tcp: { mode: 'hello' } })
  const b = await server(t, topo, other, { tcp: { mode: 'hello' } })
  const pa = a.tcpPort as number
  const pb = b.tcpPort as number
  const forwards = `${pa} ${v4.dest}\n8001 ${v4.dest} ${pa}\n8002 ${OTHER_NAME} ${pb}\n`
  const router = await opsDaemon(t, topo, opsEnv('dns-proxy', { EGRESS_DNS_PROXY_DESTINATION: forwards, EGRESS_DNS_PROXY_FORWARDING: 'kernel' }))
  // ready means the name resolved and its rule is in
  const kernelLines = router.logs.filter((l) => l.event === 'kernel-forward').map((l) => [l.port, l.target, l.targetPort, l.addresses ?? null])
  t.same(kernelLines, [[pa, v4.dest, pa, null], [8001, v4.dest, pa, null], [8002, OTHER_NAME, pb, [other]]], 'the daemon says which forwards the kernel carries, and where the name points')
  const ports = await listening(topo)
  t.notOk(ports.has(pa) || ports.has(8001) || ports.has(8002), `nothing listens on the forwards' ports ${pa}, 8001 and 8002`)

  const cases = [
    { port: pa, expect: `${v4.dest}:${pa}`, what: `${pa} → ${v4.dest}` },
    { port: 8001, expect: `${v4.dest}:${pa}`, what: `8001 → ${v4.dest}:${pa} (target port)` },
    { port: 8002, expect: `${other}:${pb}`, what: `8002 → ${OTHER_NAME}:${pb} (host name)` }
  ]
  for (const c of cases) {
    t.same(landing(await tcpRequest(topo, { host: v4.routerPod, port: c.port, send: c.what })), { at: c.expect, from: v4.source }, `${c.what}: reached ${c.expect}, which saw EGRESS_SOURCE`)
  }
  for (const p of [pa, 8001, 8002]) t.ok(((await dnatPackets(topo, p)) ?? 0) > 0, `the DNAT rule for ${p} counted the connection`)

  const samples = await scrape(topo)
  t.equal(metric(samples, 'egress_router_connections_total', { mode: 'dns-proxy', listener: '8002' }), null, 'no process metrics: no process relays')
  t.notOk(router.logs.some((l) => l.event === 'listening'), 'and nothing was opened to listen (no forwarder, no workers)')
})

t.test('kernel forwarding: SIGHUP moves, removes and adds kernel forwards; connections in flight through them finish', privileged(), async (t) => {
  const topo = await opsTopology(t, { dns: true })
  const sink = await server(t, topo, v4.dest, { tcp: { mode: 'sink' } })
  const sinkOther = await server(t, topo, other, { tcp: { mode: 'sink' } })
  const port = sink.tcpPort as number
  const forwards = configFile(t, 'forwards', `7000 ${v4.dest} ${port}\n7001 ${v4.dest} ${port}\n`)
  const router = await opsDaemon(t, topo, opsEnv('dns-proxy', { EGRESS_DNS_PROXY_DESTINATION_FILE: forwards.path, EGRESS_DNS_PROXY_FORWARDING: 'kernel' }))
  const kept = startTransfer(t, topo, { host: v4.routerPod, port: 7000, bytes: SIZE, rate: RATE })
  const removed = startTransfer(t, topo, { host: v4.routerPod, port: 7001, bytes: SIZE, rate: RATE })
  await kept.waitFor('started')
  await removed.waitFor('started')

  // 7000 moves to another address, 7001 goes, 7002 is new, 7003 is new and a host name
  forwards.write(`7000 ${other} ${sinkOther.tcpPort as number}\n7002 ${v4.dest} ${port}\n7003 ${DEST_NAME} ${port}\n`)
  const ok = await reload(router)
  t.equal(ok.event, 'reloaded', `valid: reloaded (${JSON.stringify(ok)})`)
  t.notOk(kept.events.some((e) => e.event === 'done') || removed.events.some((e) => e.event === 'done'), 'the reload happened while both connections were busy')

  const refused = await tcpRequest(topo, { host: v4.routerPod, port: 7001, timeoutMs: 2_000 })
  t.equal(refused.ok ? 'connected' : refused.error.code, 'ECONNREFUSED', 'the removed forward 7001 takes no new connections')
  for (const p of [7002, 7003]) await reaches(t, topo, p, sink, `the new forward ${p} carries a connection`, `${v4.dest} to get the connection through ${p}`)
  await reaches(t, topo, 7000, sinkOther, 'a new connection to the moved forward 7000 works', `the new target ${other} to get it`)
  t.pass(`and goes to its new target ${other}`)
  await survives(t, kept, sink, 'kernel forward 7000 (moved)', SIZE)
  await survives(t, removed, sink, 'kernel forward 7001 (removed)', SIZE)
  const ports = await listening(topo)
  t.notOk(ports.has(7002) || ports.has(7003), 'neither new forward has a listener')
})

t.test('kernel forwarding with an IPv6 EGRESS_SOURCE: an ip6 DNAT rule, and the destination sees 2001:db8:1::99', privileged(), async (t) => {
  const v6 = LAB.v6
  const topo = await topology(t, { ipv6: true })
  const dest = await server(t, topo, v6.dest, { tcp: { mode: 'hello' } })
  const port = dest.tcpPort as number
  await daemon(t, topo, redirectEnv({ EGRESS_ROUTER_MODE: 'dns-proxy', EGRESS_DNS_PROXY_DESTINATION: `${port} ${v6.dest}\n8001 ${v6.dest} ${port}\n`, EGRESS_DNS_PROXY_FORWARDING: 'kernel' }, { ipv6: true }))
  const ports = await listening(topo)
  t.notOk(ports.has(port) || ports.has(8001), 'nothing listens on the kernel forwards\' ports')
  for (const p of [port, 8001]) {
    t.same(landing(await tcpRequest(topo, { host: v6.routerPod, port: p, send: `over ${p}` })), { at: `[${v6.dest}]:${port}`, from: v6.source }, `[${v6.routerPod}]:${p}: reached [${v6.dest}]:${port}, which saw EGRESS_SOURCE`)
  }
  const rules = await topo.exec('router', ['nft', 'list', 'chain', 'ip6', 'egress_router', 'nat_prerouting'])
  t.match(rules.stdout, `dnat to [${v6.dest}]:${port} comment "EGRESS_DNS_PROXY_DESTINATION line 2: 8001 tcp"`, 'the rule is in the ip6 table')
})
