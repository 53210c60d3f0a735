/**
 * applyNetwork / unwind / diffNetwork / repairNetwork / cleanupNetwork against the real kernel. The
 * router namespace stands for the egress-router pod (or host): `lan0` is the parent NIC on the LAN,
 * `pod0` where clients come in; the peer namespace is the LAN with the gateway.
 */
import t from 'tap'
import type { NetworkPlan } from '../../src/plan/types.js'
import { privileged } from '../helpers/privileged.js'
import { addNic, distMissing, dumpState, ip, makePair, startApply, waitFor } from '../fixtures/netlink/topology.js'

const missing = distMissing()
if (missing !== null) t.fail(missing)

const MAC = '02:65:72:00:00:99'

function v4 (address: string, prefix = 32) { return { address, family: 4 as const, prefix } }
function v6 (address: string, prefix = 128) { return { address, family: 6 as const, prefix } }

/** pod routing, IPv4: the pod's default route moves to the gateway on the macvlan */
const pod4: NetworkPlan = {
  family: 4,
  link: { action: 'create', name: 'macvlan0', parent: 'lan0', mode: 'bridge', mac: MAC },
  addresses: [{ link: 'macvlan0', cidr: v4('192.0.2.99', 24), noPrefixRoute: false }],
  routes: [{ family: 4, table: 'main', dst: null, via: v4('192.0.2.1'), dev: 'macvlan0', src: v4('192.0.2.99'), why: 'default' }],
  rules: [],
  sysctls: [
    { path: 'net/ipv4/conf/macvlan0/arp_notify', value: '1', why: 'announce' },
    { path: 'net/ipv4/conf/pod0/forwarding', value: '1', why: 'forward' },
    { path: 'net/ipv4/conf/macvlan0/forwarding', value: '1', why: 'forward' }
  ],
  gateway: { address: '192.0.2.1', family: 4 }
}

/** host routing, IPv4: our own table, selected by source and by fwmark; the main table untouched */
const host4: NetworkPlan = {
  family: 4,
  link: { action: 'create', name: 'macvlan0', parent: 'lan0', mode: 'private', mac: MAC },
  addresses: [{ link: 'macvlan0', cidr: v4('192.0.2.99', 24), noPrefixRoute: true }],
  routes: [
    { family: 4, table: 6572, dst: v4('192.0.2.0', 24), via: null, dev: 'macvlan0', src: v4('192.0.2.99'), why: 'lan' },
    { family: 4, table: 6572, dst: null, via: v4('192.0.2.1'), dev: 'macvlan0', src: v4('192.0.2.99'), why: 'default' }
  ],
  rules: [
    { family: 4, priority: 6572, from: v4('192.0.2.99'), fwmark: null, table: 6572, why: 'from source' },
    { family: 4, priority: 6573, from: null, fwmark: 0x6572, table: 6572, why: 'marked' }
  ],
  sysctls: [
    { path: 'net/ipv4/conf/macvlan0/arp_notify', value: '1', why: 'announce' },
    { path: 'net/ipv4/conf/macvlan0/rp_filter', value: '2', why: 'loose' }
  ],
  gateway: { address: '192.0.2.1', family: 4 }
}

/** pod routing, IPv6 */
const pod6: NetworkPlan = {
  family: 6,
  link: { action: 'create', name: 'macvlan0', parent: 'lan0', mode: 'bridge', mac: MAC },
  addresses: [{ link: 'macvlan0', cidr: v6('2001:db8:1::99', 64), noPrefixRoute: false }],
  routes: [{ family: 6, table: 'main', dst: null, via: v6('2001:db8:1::1'), dev: 'macvlan0', src: v6('2001:db8:1::99'), why: 'default' }],
  rules: [{ family: 6, priority: 6572, from: v6('2001:db8:1::99'), fwmark: null, table: 6572, why: 'from source' }],
  sysctls: [
    { path: 'net/ipv6/conf/macvlan0/ndisc_notify', value: '1', why: 'announce' },
    { path: 'net/ipv6/conf/macvlan0/accept_ra', value: '0', why: 'no RA' },
    { path: 'net/ipv6/conf/all/forwarding', value: '1', why: 'forward' }
  ],
  gateway: { address: '2001:db8:1::1', family: 6 }
}

const GLOBAL_SYSCTLS = ['net/ipv4/conf/pod0/forwarding', 'net/ipv4/conf/lan0/forwarding', 'net/ipv6/conf/all/forwarding', 'net/ipv6/conf/lan0/forwarding']

/** The pod: a LAN (lan0 ↔ peer with the gateways) and a client side (pod0) holding the default routes. */
async function pod (t: { teardown: (fn: () => void) => void }, tag: string): Promise<{ router: string, peer: string }> {
  const pair = makePair(t, tag)
  addNic(pair.router, 'pod0')
  ip('-n', pair.router, 'addr', 'add', '198.51.100.2/24', 'dev', 'pod0')
  ip('-n', pair.router, 'route', 'add', 'default', 'via', '198.51.100.1', 'dev', 'pod0')
  ip('-n', pair.router, 'addr', 'add', '2001:db8:2::2/64', 'dev', 'pod0', 'nodad')
  ip('-n', pair.router, 'route', 'add', 'default', 'via', '2001:db8:2::1', 'dev', 'pod0')
  ip('-n', pair.peer, 'addr', 'add', '192.0.2.1/24', 'dev', 'lan0')
  ip('-n', pair.peer, 'addr', 'add', '2001:db8:1::1/64', 'dev', 'lan0', 'nodad')
  // the "before" snapshot must not catch link-local DAD half-way: wait until it has settled
  const settled = await waitFor(() => /tentative/.test(ip('-n', pair.router, '-6', 'addr')) ? null : true, 15_000)
  if (settled === null) throw new Error('IPv6 DAD did not settle in the router namespace')
  return pair
}

t.test('IPv4 pod routing: apply, a second apply changes nothing, unwind leaves every dump byte-identical', privileged(), async t => {
  const { router } = await pod(t, 'p4')
  const before = dumpState(router, GLOBAL_SYSCTLS)
  const s = await startApply(t, router, pod4, { reannounceMs: null })
  t.match(s.applied, { event: 'applied', created: true })
  t.same(s.applied.undo, [
    'delete link macvlan0',
    'restore sysctl net/ipv4/conf/macvlan0/arp_notify=0',
    'restore sysctl net/ipv4/conf/macvlan0/forwarding=0',
    'delete address 192.0.2.99/24 on macvlan0',
    'restore the route it replaced: default via 192.0.2.1 dev macvlan0 src 192.0.2.99 table main',
    'restore sysctl net/ipv4/conf/pod0/forwarding=0'
  ], 'the macvlan\'s own sysctls come right after it exists, before its address and up')
  const link = ip('-n', router, '-d', 'link', 'show', 'macvlan0')
  t.match(link, /macvlan0@lan0: <BROADCAST,MULTICAST,UP,LOWER_UP>/)
  t.match(link, new RegExp(`link/ether ${MAC}`))
  t.match(link, /macvlan mode bridge/)
  t.match(link, /alias egress-router/, 'marked as ours')
  t.equal(ip('-n', router, 'route', 'show', 'default'), 'default via 192.0.2.1 dev macvlan0 proto static src 192.0.2.99 \n')

  const afterApply = dumpState(router, GLOBAL_SYSCTLS)
  t.same(await s.send('apply-again'), { event: 'apply-again', created: false, undo: [] }, 'nothing to change, nothing to undo')
  t.equal(dumpState(router, GLOBAL_SYSCTLS), afterApply, 'the second apply left the kernel as it was')
  t.same(await s.send('diff'), { event: 'diff', drifts: [] })

  const unwound = await s.send('unwind')
  t.same(unwound.failed, [])
  t.same(unwound.undone, [...s.applied.undo].reverse())
  t.equal(dumpState(router, GLOBAL_SYSCTLS), before, 'byte-identical after unwind')
  t.match(ip('-n', router, 'route', 'show', 'default'), /^default via 198\.51\.100\.1 dev pod0 \n$/, 'the pod default route is back')
})

t.test('IPv4 host routing: own table, rules by source and fwmark; drift detected and repaired; unwind identical', privileged(), async t => {
  const { router } = await pod(t, 'h4')
  const mainBefore = ip('-n', router, 'route', 'show', 'table', 'main')
  const before = dumpState(router, GLOBAL_SYSCTLS)
  const s = await startApply(t, router, host4, { reannounceMs: null })
  t.match(s.applied, { event: 'applied', created: true })
  t.equal(ip('-n', router, 'route', 'show', 'table', 'main'), mainBefore, 'main table untouched (noprefixroute)')
  t.equal(ip('-n', router, 'route', 'show', 'table', '6572'),
    'default via 192.0.2.1 dev macvlan0 proto static src 192.0.2.99 \n192.0.2.0/24 dev macvlan0 proto static scope link src 192.0.2.99 \n')
  t.match(ip('-n', router, 'rule'), /6572:\tfrom 192\.0\.2\.99 lookup 6572 *\n6573:\tfrom all fwmark 0x6572 lookup 6572/)
  t.match(ip('-n', router, 'route', 'get', '203.0.113.5', 'from', '192.0.2.99'),
    /^203\.0\.113\.5 from 192\.0\.2\.99 via 192\.0\.2\.1 dev macvlan0 table 6572 /, 'from the source: our table')
  t.match(ip('-n', router, 'route', 'get', '203.0.113.5', 'mark', '0x6572'), /via 192\.0\.2\.1 dev macvlan0 table 6572/, 'marked: our table')
  t.match(ip('-n', router, 'route', 'get', '203.0.113.5'), /via 198\.51\.100\.1 dev pod0/, 'everything else: the host default')

  ip('-n', router, 'addr', 'del', '192.0.2.99/24', 'dev', 'macvlan0')
  ip('-n', router, 'route', 'replace', 'default', 'via', '192.0.2.7', 'dev', 'lan0', 'table', '6572', 'onlink')
  ip('-n', router, 'rule', 'del', 'priority', '6573')
  const drift = await s.send('diff')
  t.same(drift.drifts, [
    'address 192.0.2.99/24 on macvlan0 is gone',
    'route 192.0.2.0/24 dev macvlan0 src 192.0.2.99 table 6572 is gone',
    `route default via 192.0.2.1 dev macvlan0 src 192.0.2.99 table 6572 changed: now via 192.0.2.7 dev #${lanIndex(router)}`,
    'rule priority 6573 fwmark 0x6572 lookup 6572 is gone'
  ], 'deleting the address also took the route that used it as source')
  const repaired = await s.send('repair')
  t.same(repaired.repaired, drift.drifts)
  t.same(repaired.after, [], 'nothing drifts after the repair')
  t.match(ip('-n', router, 'rule'), /6573:\tfrom all fwmark 0x6572 lookup 6572/)

  ip('-n', router, 'link', 'set', 'macvlan0', 'down')
  const down = await s.send('diff')
  t.ok(down.drifts.includes('link macvlan0 is down'), 'link down is a drift')
  t.same((await s.send('repair')).after, [])

  const unwound = await s.send('unwind')
  t.same(unwound.failed, [])
  t.equal(dumpState(router, GLOBAL_SYSCTLS), before, 'byte-identical after unwind')
})

function lanIndex (ns: string): string {
  return /^(\d+):/.exec(ip('-n', ns, '-o', 'link', 'show', 'lan0'))?.[1] ?? '?'
}

t.test('IPv6: address usable at once, default route and rule; drift repaired; unwind identical', privileged(), async t => {
  const { router } = await pod(t, 'p6')
  const before = dumpState(router, GLOBAL_SYSCTLS)
  const s = await startApply(t, router, pod6, { reannounceMs: null })
  t.match(s.applied, { event: 'applied', created: true })
  const addr = ip('-n', router, '-6', 'addr', 'show', 'macvlan0')
  t.match(addr, /inet6 2001:db8:1::99\/64 scope global nodad/)
  t.notMatch(addr, /2001:db8:1::99\/64[^\n]*tentative/, 'not tentative')
  t.match(ip('-n', router, '-6', 'route', 'show', 'default'), /^default via 2001:db8:1::1 dev macvlan0 proto static src 2001:db8:1::99 metric 1024 pref medium\n$/)
  t.match(ip('-n', router, '-6', 'rule'), /6572:\tfrom 2001:db8:1::99 lookup 6572/)

  ip('-n', router, '-6', 'addr', 'del', '2001:db8:1::99/64', 'dev', 'macvlan0')
  ip('-n', router, '-6', 'rule', 'del', 'priority', '6572')
  const drift = await s.send('diff')
  t.ok(drift.drifts.includes('address 2001:db8:1::99/64 on macvlan0 is gone'))
  t.ok(drift.drifts.includes('rule priority 6572 from 2001:db8:1::99/128 lookup 6572 is gone'))
  t.same((await s.send('repair')).after, [])

  const unwound = await s.send('unwind')
  t.same(unwound.failed, [])
  t.equal(dumpState(router, GLOBAL_SYSCTLS), before, 'byte-identical after unwind')
})

for (const family of [4, 6] as const) {
  t.test(`IPv${family}: a stale neighbour entry on the LAN learns the macvlan's MAC, the peer sending nothing`, privileged(), async t => {
    const { router, peer } = await pod(t, `n${family}`)
    const plan = family === 4 ? pod4 : pod6
    const source = plan.addresses[0]?.cidr.address ?? ''
    // what the LAN remembers from the old router: a wrong MAC, just refreshed (inside the 1 s locktime)
    ip('-n', peer, 'neigh', 'replace', source, 'lladdr', '02:00:00:00:00:01', 'dev', 'lan0', 'nud', 'stale')
    const s = await startApply(t, router, plan)
    t.match(s.applied, { event: 'applied' })
    const learnt = await waitFor(() => {
      const line = ip('-n', peer, 'neigh', 'show', source, 'dev', 'lan0')
      return line.includes(MAC) ? line : null
    }, 10_000)
    t.match(learnt, new RegExp(`lladdr ${MAC}`), 'the peer now has our MAC')
    t.same(await s.send('reannounced'), { event: 'reannounced', outcome: { ok: true } }, 'the second announcement went out')
    await s.send('unwind')
  })
}

t.test('an adopted macvlan that is already up is announced, kept on unwind, and never cleaned up', privileged(), async t => {
  const { router, peer } = await pod(t, 'ad')
  ip('-n', router, 'link', 'add', 'macvlan0', 'link', 'lan0', 'address', '02:00:00:00:00:42', 'type', 'macvlan', 'mode', 'bridge')
  ip('-n', router, 'link', 'set', 'macvlan0', 'up')
  ip('-n', peer, 'neigh', 'replace', '192.0.2.99', 'lladdr', '02:00:00:00:00:01', 'dev', 'lan0', 'nud', 'stale')
  const adopt: NetworkPlan = { ...pod4, link: { action: 'adopt', name: 'macvlan0', parent: null, mode: 'bridge', mac: null } }
  const s = await startApply(t, router, adopt)
  t.match(s.applied, { event: 'applied', created: false })
  t.notOk(s.applied.undo.some((u: string) => u.startsWith('delete link')), 'no undo deletes an adopted link')
  const learnt = await waitFor(() => ip('-n', peer, 'neigh', 'show', '192.0.2.99', 'dev', 'lan0').includes('02:00:00:00:00:42') ? true : null, 10_000)
  t.equal(learnt, true, 'announced although the link was up already')
  const unwound = await s.send('unwind')
  t.same(unwound.failed, [])
  t.match(ip('-n', router, '-d', 'link', 'show', 'macvlan0'), /02:00:00:00:00:42[^]*macvlan mode bridge/, 'the adopted link stays')
  t.notMatch(ip('-n', router, 'addr', 'show', 'macvlan0'), /192\.0\.2\.99/, 'our address on it is gone')
})

t.test('cleanup removes our rules, our table and the macvlan we marked, and nothing else; twice is fine', privileged(), async t => {
  const { router } = await pod(t, 'cl')
  ip('-n', router, 'rule', 'add', 'priority', '6572', 'from', '198.51.100.9', 'lookup', 'main')
  ip('-n', router, 'route', 'add', '203.0.113.0/24', 'via', '198.51.100.1', 'table', '100')
  const foreign = dumpState(router, [])
  const s = await startApply(t, router, host4, { reannounceMs: null })
  t.match(s.applied, { event: 'applied', created: true })
  const targets = { linkName: 'macvlan0', tables: [6572], rulePriorities: [6572, 6573] }
  const first = await s.send(`cleanup ${JSON.stringify(targets)}`)
  t.same(first.removed.sort(), [
    'IPv4 route 192.0.2.0/24 table 6572', 'IPv4 route default table 6572',
    'IPv4 rule priority 6572 lookup 6572', 'IPv4 rule priority 6573 lookup 6572', 'link macvlan0'
  ].sort())
  t.same(await s.send(`cleanup ${JSON.stringify(targets)}`), { event: 'cleanup', removed: [] }, 'idempotent')
  t.match(ip('-n', router, 'rule'), /6572:\tfrom 198\.51\.100\.9 lookup main/, 'a foreign rule at our priority stays')
  t.equal(dumpState(router, []), foreign, 'only what we created is gone')
  const unwound = await s.send('unwind')
  t.same(unwound.failed, [], 'unwinding after a cleanup finds everything already gone, and that is fine')
})
