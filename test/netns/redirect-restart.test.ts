/**
 * Redirect mode across restarts and against drift, with the real daemon in the lab topology: a restart leaves
 * exactly the same kernel state, and what someone removes by hand (the whole nft ruleset, the macvlan's
 * address, the default route) comes back on its own while traffic keeps its source address.
 */
import t, { type Test } from 'tap'
import type { LogLine, RouterProcess } from '../../src/lab/router-process.js'
import { LAB, type Topology } from '../../src/lab/topology.js'
import { privileged } from '../helpers/privileged.js'
import { hostOf, startPeerServer, tcpRequest, udpRequest, type PeerServer } from '../helpers/peers.js'
import { daemon, distMissing, dumpState, redirectEnv, topology, type StateDump } from '../helpers/router-e2e.js'

const missing = distMissing()
if (missing !== null) t.fail(missing)

const v4 = LAB.v4

async function destination (t: Test, topo: Topology): Promise<PeerServer> {
  const server = await startPeerServer(topo, { host: v4.dest, tcp: { mode: 'hello' }, udp: { mode: 'hello' } })
  t.teardown(server.stop)
  return server
}

function rules (server: PeerServer): string {
  return `${server.tcpPort as number} tcp ${v4.dest}\n8080 tcp ${v4.dest} ${server.tcpPort as number}\n${server.udpPort as number} udp ${v4.dest}\n`
}

/** The source the destination saw for one tcp connection through the router (or the client's error). */
async function tcpSource (topo: Topology, port: number, timeoutMs = 3_000): Promise<string> {
  const r = await tcpRequest(topo, { host: v4.routerPod, port, timeoutMs })
  if (!r.ok) return `error ${r.error.code}`
  return r.greeting === null ? 'no greeting' : hostOf(r.greeting.peer)
}

function median (xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b)
  const mid = Math.floor(s.length / 2)
  return s.length % 2 === 1 ? s[mid] as number : ((s[mid - 1] as number) + (s[mid] as number)) / 2
}

/** Lines of b that differ from a, for a readable failure. */
function diffLines (a: string, b: string): string[] {
  const al = a.split('\n')
  const bl = b.split('\n')
  const out: string[] = []
  for (let i = 0; i < Math.max(al.length, bl.length); i++) {
    if (al[i] !== bl[i]) out.push(`line ${i + 1}: ${JSON.stringify(al[i])} → ${JSON.stringify(bl[i])}`)
  }
  return out
}

t.test('restarts leave exactly the same links, addresses, routes, rules and nft ruleset', privileged(), async (t) => {
  const topo = await topology(t)
  const server = await destination(t, topo)
  const env = redirectEnv({ EGRESS_DESTINATION: rules(server) })
  const starts = 10
  const dumps: StateDump[] = []
  const setupMs: number[] = []
  const actions: string[] = []
  for (let i = 0; i < starts; i++) {
    const router = await daemon(t, topo, env)
    const ruled = router.logs.find((l) => l.event === 'rules')
    if (typeof ruled?.setupMs === 'number') setupMs.push(ruled.setupMs)
    actions.push(String(router.logs.find((l) => l.event === 'network')?.action))
    // Every start carries traffic, or an identical dump of a broken state would pass.
    t.equal(await tcpSource(topo, server.tcpPort as number), v4.source, `start ${i + 1}: traffic leaves from EGRESS_SOURCE`)
    dumps.push(await dumpState(topo))
    const exit = await router.stop('SIGTERM', 10_000)
    t.same(exit, { code: 0, signal: null }, `start ${i + 1}: SIGTERM stops it with exit 0`)
  }
  t.equal(actions[0], 'created', 'the first start creates the macvlan')
  t.same(actions.slice(1), Array(starts - 1).fill('found (from an earlier run)'), 'every restart finds its own macvlan (not "adopted": it is ours)')
  const first = dumps[0] as StateDump
  for (let i = 1; i < dumps.length; i++) {
    for (const [name, text] of Object.entries(dumps[i] as StateDump)) {
      const diff = diffLines(first[name] as string, text)
      t.same(diff, [], `after start ${i + 1}, \`${name}\` is the same as after the first start`)
    }
  }
  t.equal(setupMs.length, starts, 'every start logged setupMs on its rules line')
  t.comment(`setupMs (process start → rules in place) over ${starts} starts: median ${median(setupMs)} ms; all: ${setupMs.join(', ')}`)
})

/** Marks the log, then waits for a line after the mark. */
function after (router: RouterProcess): (match: (l: LogLine) => boolean, what: string, timeoutMs?: number) => Promise<LogLine> {
  const mark = router.logs.length
  return async (match, what, timeoutMs) => await router.waitForLog((l) => router.logs.indexOf(l) >= mark && match(l), what, timeoutMs)
}

t.test('drift is repaired without a hand: nft flush ruleset, the macvlan address, the default route, a sysctl', privileged(), async (t) => {
  const topo = await topology(t)
  const server = await destination(t, topo)
  const router = await daemon(t, topo, redirectEnv({ EGRESS_DESTINATION: rules(server) }))
  const port = server.tcpPort as number
  t.equal(await tcpSource(topo, port), v4.source, 'before: traffic leaves from EGRESS_SOURCE')

  const cases: Array<{ what: string, argv: string[], drift: string }> = [
    { what: 'nft flush ruleset', argv: ['nft', 'flush', 'ruleset'], drift: 'nft' },
    { what: `ip addr del ${v4.source}/24 dev macvlan0`, argv: ['ip', 'addr', 'del', `${v4.source}/24`, 'dev', 'macvlan0'], drift: 'network' },
    { what: 'ip route del default', argv: ['ip', 'route', 'del', 'default'], drift: 'network' },
    // no event for a sysctl: the reconciler reads them every interval
    { what: 'sysctl net.ipv4.conf.macvlan0.forwarding=0', argv: ['sysctl', '-qw', 'net.ipv4.conf.macvlan0.forwarding=0'], drift: 'network' }
  ]
  for (const c of cases) {
    const next = after(router)
    const changedAt = Date.now()
    await topo.execOk('router', c.argv)
    const drift = await next((l) => l.event === 'drift' && l.what === c.drift, `the daemon to log the ${c.drift} drift after ${c.what}`, 2_000)
    // the kernel's change events, not the 1 s timer, found the first three (what the bench's idle CPU figure shows)
    t.ok(drift, `after ${c.what}: the daemon logged the drift ${Number(drift.time) - changedAt} ms after the command was started: ${JSON.stringify(drift.drift)}`)
    const repaired = await next((l) => l.event === 'repaired' && l.what === c.drift, `the repair after ${c.what}`, 2_000).catch((err: Error) => err)
    t.notOk(repaired instanceof Error, `after ${c.what}: repaired within 2 s${repaired instanceof Error ? `: ${repaired.message}` : ''}`)
    t.equal(await tcpSource(topo, port), v4.source, `after ${c.what}: tcp leaves from EGRESS_SOURCE again`)
    t.equal(await tcpSource(topo, 8080), v4.source, `after ${c.what}: the port rewrite works again`)
    const u = await udpRequest(topo, { host: v4.routerPod, port: server.udpPort as number })
    t.equal(u.ok && u.greeting !== null ? hostOf(u.greeting.peer) : 'no answer', v4.source, `after ${c.what}: udp leaves from EGRESS_SOURCE again`)
  }
  const failures = router.logs.filter((l) => l.event === 'repair-failed')
  t.same(failures, [], 'no repair failed')
})
