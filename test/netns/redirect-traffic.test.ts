/**
 * Redirect mode end to end, with real traffic: the real daemon (bin/egress-router run) in the router namespace
 * of the lab topology, clients in the client namespace, peer servers in the destination namespace that report
 * the source address each connection and datagram came from.
 */
import t, { type Test } from 'tap'
import { LAB, type Topology } from '../../src/lab/topology.js'
import { waitFor } from '../../src/lab/wait.js'
import { privileged } from '../helpers/privileged.js'
import { hostOf, startPeerServer, tcpRequest, udpRequest, type ClientResult, type PeerServer } from '../helpers/peers.js'
import { daemon, distMissing, linkInfo, redirectEnv, topology } from '../helpers/router-e2e.js'

const missing = distMissing()
if (missing !== null) t.fail(missing)

const v4 = LAB.v4

/** The source the destination reported to the client, or the client's error code. */
function seenAs (r: ClientResult): string {
  if (!r.ok) return `error ${r.error.code}`
  return r.greeting === null ? 'no greeting' : hostOf(r.greeting.peer)
}

/** Two servers: the rule target (tcp + udp) on 203.0.113.10, the fallback target on 203.0.113.11. */
async function servers (t: Test, topo: Topology): Promise<{ main: PeerServer, fallback: PeerServer }> {
  const main = await startPeerServer(topo, { host: v4.dest, tcp: { mode: 'hello' }, udp: { mode: 'hello' } })
  t.teardown(main.stop)
  const fallback = await startPeerServer(topo, { host: v4.destExtra[0], tcp: { mode: 'hello' }, udp: { mode: 'hello' } })
  t.teardown(fallback.stop)
  return { main, fallback }
}

t.test('TCP and UDP through every EGRESS_DESTINATION rule form leave from EGRESS_SOURCE', privileged(), async (t) => {
  const topo = await topology(t)
  const { main, fallback } = await servers(t, topo)
  const tcp = main.tcpPort as number
  const udp = main.udpPort as number
  const destination = [
    '# same port',
    `${tcp} tcp ${v4.dest}`,
    `${udp} udp ${v4.dest}`,
    '# port rewrite',
    `8080 tcp ${v4.dest} ${tcp}`,
    `5353 udp ${v4.dest} ${udp}`,
    '# fallback: every other port and protocol',
    v4.destExtra[0]
  ].join('\n')
  await daemon(t, topo, redirectEnv({ EGRESS_DESTINATION: destination }))

  const cases: Array<{ what: string, proto: 'tcp' | 'udp', port: number, server: PeerServer, serverPort: number }> = [
    { what: 'tcp, same port', proto: 'tcp', port: tcp, server: main, serverPort: tcp },
    { what: 'udp, same port', proto: 'udp', port: udp, server: main, serverPort: udp },
    { what: 'tcp, port rewrite 8080 →', proto: 'tcp', port: 8080, server: main, serverPort: tcp },
    { what: 'udp, port rewrite 5353 →', proto: 'udp', port: 5353, server: main, serverPort: udp },
    { what: 'tcp, fallback', proto: 'tcp', port: fallback.tcpPort as number, server: fallback, serverPort: fallback.tcpPort as number },
    { what: 'udp, fallback', proto: 'udp', port: fallback.udpPort as number, server: fallback, serverPort: fallback.udpPort as number }
  ]
  for (const c of cases) {
    const request = c.proto === 'tcp' ? tcpRequest : udpRequest
    const r = await request(topo, { host: v4.routerPod, port: c.port, send: `hello ${c.what}` })
    t.equal(seenAs(r), v4.source, `${c.what}: the destination told the client it came from EGRESS_SOURCE`)
    const event = c.proto === 'tcp' ? 'connection' : 'datagram'
    const report = await c.server.waitForReport((x) => x.event === event && x.local.endsWith(`:${c.serverPort}`) && hostOf(x.peer) === v4.source,
      { what: `${c.what}: the destination's ${event} report from ${v4.source}` }).catch(() => null)
    t.ok(report, `${c.what}: the destination reported a ${event} from ${v4.source} on port ${c.serverPort}`)
  }
  const strangers = [...main.reports, ...fallback.reports].filter((x) => 'peer' in x && hostOf(x.peer) !== v4.source)
  t.same(strangers, [], 'the destinations saw no other source address')
})

t.test('without a fallback, a port without a rule gets a refusal and the destination sees nothing', privileged(), async (t) => {
  const topo = await topology(t)
  const { main, fallback } = await servers(t, topo)
  // Only the main server's ports have rules; the "fallback" server's ports are ports without a rule.
  await daemon(t, topo, redirectEnv({ EGRESS_DESTINATION: `${main.tcpPort as number} tcp ${v4.dest}\n${main.udpPort as number} udp ${v4.dest}\n` }))

  const ok = await tcpRequest(topo, { host: v4.routerPod, port: main.tcpPort as number })
  t.equal(seenAs(ok), v4.source, 'the port with a rule works')

  const unruled = fallback.tcpPort as number
  const tcp = await tcpRequest(topo, { host: v4.routerPod, port: unruled, timeoutMs: 3_000 })
  t.equal(seenAs(tcp), 'error ECONNREFUSED', `tcp ${unruled}: reset (connection refused), not a timeout`)
  const udp = await udpRequest(topo, { host: v4.routerPod, port: fallback.udpPort as number, timeoutMs: 3_000 })
  t.equal(seenAs(udp), 'error ECONNREFUSED', `udp ${fallback.udpPort as number}: port unreachable`)
  // The main server's own port number, on the other address (its tcp port over udp has no rule either).
  const cross = await udpRequest(topo, { host: v4.routerPod, port: main.tcpPort as number, timeoutMs: 3_000 })
  t.equal(seenAs(cross), 'error ECONNREFUSED', 'a tcp rule does not open the same port for udp')
  t.same(fallback.reports, [], 'the server on the unruled ports saw nothing')
  t.same(main.reports.filter((x) => x.event === 'datagram'), [], 'the rule target saw no datagram')
})

t.test('from the LAN, EGRESS_SOURCE reaches neither the destination nor the client side', privileged(), async (t) => {
  const topo = await topology(t)
  const { main, fallback } = await servers(t, topo)
  const client = await startPeerServer(topo, { ns: 'client', host: v4.client, tcp: { mode: 'hello' }, udp: { mode: 'hello' } })
  t.teardown(client.stop)
  // The most permissive configuration: rules, a port rewrite and a fallback that takes every other port.
  await daemon(t, topo, redirectEnv({
    EGRESS_DESTINATION: `${main.tcpPort as number} tcp ${v4.dest}\n${main.udpPort as number} udp ${v4.dest}\n8080 tcp ${v4.dest} ${main.tcpPort as number}\n${v4.destExtra[0]}\n`
  }))
  // Before: the same probes from the client side do get through (so a silence below means something).
  t.equal(seenAs(await tcpRequest(topo, { host: v4.routerPod, port: fallback.tcpPort as number })), v4.source, 'the fallback works from the pod side')
  const before = { main: main.reports.length, fallback: fallback.reports.length }

  const ports = {
    tcp: [main.tcpPort as number, 8080, fallback.tcpPort as number, client.tcpPort as number, 9090, 22],
    udp: [main.udpPort as number, fallback.udpPort as number, client.udpPort as number, 53]
  }
  const probes = [
    ...ports.tcp.map(async (port) => ({ what: `tcp ${port}`, r: await tcpRequest(topo, { ns: 'lan', host: v4.source, port, timeoutMs: 1_500 }) })),
    ...ports.udp.map(async (port) => ({ what: `udp ${port}`, r: await udpRequest(topo, { ns: 'lan', host: v4.source, port, timeoutMs: 1_500, attempts: 2 }) }))
  ]
  for (const { what, r } of await Promise.all(probes)) {
    t.notOk(r.ok, `from the LAN to ${v4.source} ${what}: no answer (${seenAs(r)})`)
  }
  t.same(main.reports.slice(before.main), [], 'the rule target saw nothing from the LAN')
  t.same(fallback.reports.slice(before.fallback), [], 'the fallback target saw nothing from the LAN')
  t.same(client.reports, [], 'the client side saw nothing from the LAN')
})

t.test('a LAN host with a stale neighbour entry learns the macvlan MAC from the announcement alone', privileged(), async (t) => {
  const topo = await topology(t)
  const bogus = '02:00:00:00:00:01'
  await topo.execOk('lan', ['ip', 'neigh', 'replace', v4.source, 'lladdr', bogus, 'dev', LAB.links.lanToRouter, 'nud', 'stale'])
  const neighbour = async (): Promise<{ lladdr?: string, state?: string[] } | undefined> => {
    const r = await topo.execOk('lan', ['ip', '-j', 'neigh', 'show', v4.source, 'dev', LAB.links.lanToRouter])
    return (JSON.parse(r.stdout) as Array<{ lladdr?: string, state?: string[] }>)[0]
  }
  t.equal((await neighbour())?.lladdr, bogus, 'the LAN host starts with the stale entry')

  const router = await daemon(t, topo, redirectEnv({ EGRESS_DESTINATION: v4.dest }), { ready: false })
  await router.waitForLog((l) => l.event === 'network', 'the macvlan to be configured')
  const mac = (await linkInfo(topo, 'macvlan0'))?.address
  t.ok(mac, 'the macvlan exists')
  // Nothing is sent from the LAN namespace: only the router's gratuitous ARP can change the entry.
  const learned = await waitFor(async () => (await neighbour())?.lladdr === mac ? await neighbour() : undefined,
    { what: `the LAN neighbour entry of ${v4.source} to become ${String(mac)}`, timeoutMs: 2_000, intervalMs: 50 }).catch((err: Error) => err)
  t.notOk(learned instanceof Error, `within 2 s of the macvlan coming up, the LAN has ${v4.source} at ${String(mac)}${learned instanceof Error ? `: ${learned.message}` : ''}`)
})

t.test('IPv6 EGRESS_SOURCE: tcp leaves from 2001:db8:1::99', privileged(), async (t) => {
  const v6 = LAB.v6
  const topo = await topology(t, { ipv6: true })
  const server = await startPeerServer(topo, { host: v6.dest, tcp: { mode: 'hello' }, udp: { mode: 'hello' } })
  t.teardown(server.stop)
  await daemon(t, topo, redirectEnv({
    EGRESS_DESTINATION: `${server.tcpPort as number} tcp ${v6.dest}\n8080 tcp ${v6.dest} ${server.tcpPort as number}\n${server.udpPort as number} udp ${v6.dest}\n`
  }, { ipv6: true }))
  for (const port of [server.tcpPort as number, 8080]) {
    const r = await tcpRequest(topo, { host: v6.routerPod, port })
    t.equal(seenAs(r), v6.source, `tcp [${v6.routerPod}]:${port}: the destination saw EGRESS_SOURCE`)
  }
  const u = await udpRequest(topo, { host: v6.routerPod, port: server.udpPort as number })
  t.equal(seenAs(u), v6.source, 'udp: the destination saw EGRESS_SOURCE')
  const report = await server.waitForReport((x) => x.event === 'connection', { what: 'the tcp connection report' })
  t.equal(hostOf(report.peer), v6.source, 'the destination reported the connection from 2001:db8:1::99')
  const lan = await tcpRequest(topo, { ns: 'lan', host: v6.source, port: server.tcpPort as number, timeoutMs: 1_500 })
  t.notOk(lan.ok, `from the LAN, [${v6.source}]:${server.tcpPort as number} does not answer (${seenAs(lan)})`)
})
