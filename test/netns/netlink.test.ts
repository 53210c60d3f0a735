/**
 * The rtnetlink adapter against the real kernel, inside namespaces of our own. Every call runs in a
 * child process started with `ip netns exec` (the socket belongs to the namespace it is opened in).
 */
import t from 'tap'
import { privileged } from '../helpers/privileged.js'
import { addNic, distMissing, inNs, ip, makeNs, makePair, one, ops, waitFor } from '../fixtures/netlink/topology.js'

const missing = distMissing()
if (missing !== null) t.fail(missing)

t.test('a macvlan is created with its mode, MAC, parent and alias, and found again', privileged(), async t => {
  const ns = makeNs(t, 'mv')
  addNic(ns, 'lan0')
  const spec = { name: 'mv0', parentIndex: { $link: 'lan0' }, mode: 'private', mac: '02:aa:bb:cc:dd:ee', alias: 'egress-router test' }
  const [first, second, found, parent] = ops(ns, [
    { op: 'createMacvlan', args: [spec] },
    { op: 'createMacvlan', args: [spec] },
    { op: 'linkByName', args: ['mv0'] },
    { op: 'linkByName', args: ['lan0'] }
  ])
  t.same(first, { ok: 'created' })
  t.same(second, { ok: 'exists' }, 'creating it again changes nothing')
  t.match(found?.ok, { name: 'mv0', kind: 'macvlan', macvlanMode: 'private', mac: '02:aa:bb:cc:dd:ee', up: false, alias: 'egress-router test', parentIndex: parent?.ok.index })
  const shown = ip('-n', ns, '-d', 'link', 'show', 'mv0')
  t.match(shown, /mv0@lan0: <BROADCAST,MULTICAST,M-DOWN>|mv0@lan0: <BROADCAST,MULTICAST>/, 'created down, on lan0')
  t.match(shown, /link\/ether 02:aa:bb:cc:dd:ee/)
  t.match(shown, /macvlan mode private/)
  t.equal(ip('-n', ns, '-o', 'link', 'show').split('\n').filter(l => l.includes(' mv0@')).length, 1, 'one link only')

  t.same(one(ns, 'setLinkUp', { $link: 'mv0' }, true), null)
  t.match(one(ns, 'linkByName', 'mv0'), { up: true })
  t.same(ops(ns, [{ op: 'deleteLink', args: [{ $link: 'mv0' }] }]), [{ ok: true }])
  t.equal(one(ns, 'linkByName', 'mv0'), null, 'gone')
  t.same(ops(ns, [{ op: 'deleteLink', args: [999999] }]), [{ ok: false }], 'deleting what is gone is not an error')
})

t.test('an existing macvlan made by someone else is found with its own settings', privileged(), async t => {
  const ns = makeNs(t, 'ad')
  addNic(ns, 'lan0')
  ip('-n', ns, 'link', 'add', 'cni0', 'link', 'lan0', 'address', '02:00:00:00:00:42', 'type', 'macvlan', 'mode', 'vepa')
  t.match(one(ns, 'linkByName', 'cni0'), { kind: 'macvlan', macvlanMode: 'vepa', mac: '02:00:00:00:00:42', alias: null })
  t.same(one(ns, 'createMacvlan', { name: 'cni0', parentIndex: { $link: 'lan0' }, mode: 'bridge', mac: '02:00:00:00:00:99', alias: 'x' }), 'exists')
  t.match(ip('-n', ns, '-d', 'link', 'show', 'cni0'), /02:00:00:00:00:42[^]*macvlan mode vepa/, 'left as it was')
})

t.test('addresses, routes and rules: twice is no error and no duplicate; delete twice likewise', privileged(), async t => {
  const ns = makeNs(t, 'ar')
  addNic(ns, 'lan0')
  const v4 = { address: '192.0.2.9', prefix: 24 }
  const v6 = { address: '2001:db8::9', prefix: 64 }
  const route4 = { family: 4, table: 100, dst: null, via: '192.0.2.1', oif: { $link: 'lan0' }, src: '192.0.2.9' }
  const route6 = { family: 6, table: 100, dst: null, via: '2001:db8::1', oif: { $link: 'lan0' }, src: null }
  const rule4 = { family: 4, priority: 100, from: { address: '192.0.2.9', prefix: 32 }, fwmark: null, table: 100 }
  const mark4 = { family: 4, priority: 101, from: null, fwmark: 0x6572, table: 6572 }
  const rule6 = { family: 6, priority: 100, from: { address: '2001:db8::9', prefix: 128 }, fwmark: null, table: 100 }
  const steps = [
    { op: 'addAddress', args: [{ $link: 'lan0' }, 4, v4] }, { op: 'addAddress', args: [{ $link: 'lan0' }, 4, v4] },
    { op: 'addAddress', args: [{ $link: 'lan0' }, 6, v6] }, { op: 'addAddress', args: [{ $link: 'lan0' }, 6, v6] },
    { op: 'replaceRoute', args: [route4] }, { op: 'replaceRoute', args: [route4] },
    { op: 'replaceRoute', args: [route6] }, { op: 'replaceRoute', args: [route6] },
    { op: 'addRule', args: [rule4] }, { op: 'addRule', args: [rule4] },
    { op: 'addRule', args: [mark4] }, { op: 'addRule', args: [mark4] },
    { op: 'addRule', args: [rule6] }, { op: 'addRule', args: [rule6] }
  ]
  t.same(ops(ns, steps).map(r => r.ok), [true, false, true, false, null, null, null, null, true, false, true, false, true, false])

  const addrs = ip('-n', ns, 'addr', 'show', 'lan0')
  t.equal(addrs.match(/inet 192\.0\.2\.9\/24/g)?.length, 1)
  t.equal(addrs.match(/inet6 2001:db8::9\/64 scope global nodad/g)?.length, 1, 'IPv6 added with nodad')
  t.notMatch(addrs, /2001:db8::9\/64[^\n]*tentative/, 'usable at once: not tentative')
  t.equal(ip('-n', ns, 'route', 'show', 'table', '100'), 'default via 192.0.2.1 dev lan0 proto static src 192.0.2.9 \n')
  t.match(ip('-n', ns, '-6', 'route', 'show', 'table', '100'), /^default via 2001:db8::1 dev lan0 proto static metric 1024 pref medium\n$/)
  const rules = ip('-n', ns, 'rule')
  t.equal(rules.match(/^100:\tfrom 192\.0\.2\.9 lookup 100 *$/gm)?.length, 1)
  t.equal(rules.match(/^101:\tfrom all fwmark 0x6572 lookup 6572 *$/gm)?.length, 1)
  t.equal(ip('-n', ns, '-6', 'rule').match(/^100:\tfrom 2001:db8::9 lookup 100 *$/gm)?.length, 1)

  const listed = ops(ns, [{ op: 'listRoutes', args: [4, 100] }, { op: 'listRules', args: [4] }])
  t.match(listed[0]?.ok, [{ table: 100, dst: null, via: '192.0.2.1', src: '192.0.2.9', type: 'UNICAST' }])
  t.match(listed[1]?.ok.filter((r: { priority: number }) => r.priority === 101), [{ fwmark: 0x6572, fwmask: 0xffffffff, table: 6572, from: null }])

  const del = [
    { op: 'deleteRule', args: [rule4] }, { op: 'deleteRule', args: [rule4] },
    { op: 'deleteRule', args: [rule6] }, { op: 'deleteRule', args: [rule6] },
    { op: 'deleteRoute', args: [route4] }, { op: 'deleteRoute', args: [route4] },
    { op: 'deleteAddress', args: [{ $link: 'lan0' }, 4, v4] }, { op: 'deleteAddress', args: [{ $link: 'lan0' }, 4, v4] },
    { op: 'deleteAddress', args: [{ $link: 'lan0' }, 6, v6] }, { op: 'deleteAddress', args: [{ $link: 'lan0' }, 6, v6] }
  ]
  t.same(ops(ns, del).map(r => r.ok), [true, false, true, false, true, false, true, false, true, false])
  t.equal(ip('-n', ns, 'route', 'show', 'table', '100'), '')
  t.notMatch(ip('-n', ns, 'addr', 'show', 'lan0'), /192\.0\.2\.9|2001:db8::9/)
})

t.test('a default route replaced via a gateway on the macvlan, and the default-route link per family', privileged(), async t => {
  const { router } = makePair(t, 'dr')
  addNic(router, 'pod0')
  ip('-n', router, 'addr', 'add', '198.51.100.2/24', 'dev', 'pod0')
  ip('-n', router, 'route', 'add', 'default', 'via', '198.51.100.1', 'dev', 'pod0')
  ip('-n', router, 'link', 'add', 'mv0', 'link', 'lan0', 'type', 'macvlan', 'mode', 'bridge')
  ip('-n', router, 'link', 'set', 'mv0', 'up')
  ip('-n', router, 'addr', 'add', '192.0.2.99/24', 'dev', 'mv0')
  t.match(one(router, 'defaultRouteLink', 4), { name: 'pod0' })
  t.equal(one(router, 'defaultRouteLink', 6), null, 'no IPv6 default route')
  one(router, 'replaceRoute', { family: 4, table: 254, dst: null, via: '192.0.2.1', oif: { $link: 'mv0' }, src: '192.0.2.99' })
  t.equal(ip('-n', router, 'route', 'show', 'default'), 'default via 192.0.2.1 dev mv0 proto static src 192.0.2.99 \n', 'replaced, not added')
  t.match(one(router, 'defaultRouteLink', 4), { name: 'mv0' })
})

t.test('neighbours: resolving the gateway without user traffic, and an address nobody answers for', privileged(), async t => {
  const { router, peer } = makePair(t, 'nb')
  ip('-n', peer, 'addr', 'add', '192.0.2.1/24', 'dev', 'lan0')
  ip('-n', peer, 'addr', 'add', '2001:db8::1/64', 'dev', 'lan0', 'nodad')
  const peerMac = /link\/ether (\S+)/.exec(ip('-n', peer, 'link', 'show', 'lan0'))?.[1]
  ip('-n', router, 'link', 'add', 'mv0', 'link', 'lan0', 'type', 'macvlan', 'mode', 'bridge')
  ip('-n', router, 'addr', 'add', '192.0.2.99/24', 'dev', 'mv0')
  ip('-n', router, 'addr', 'add', '2001:db8::99/64', 'dev', 'mv0', 'nodad')
  ip('-n', router, 'link', 'set', 'mv0', 'up')
  t.equal(one(router, 'getNeighbour', { $link: 'mv0' }, '192.0.2.1'), null, 'nothing known before')
  for (const gw of ['192.0.2.1', '2001:db8::1']) {
    one(router, 'resolveNeighbour', { $link: 'mv0' }, gw)
    const seen = await waitFor(() => {
      const n = one(router, 'getNeighbour', { $link: 'mv0' }, gw)
      return n?.state.includes('reachable') === true ? n : null
    }, 10_000)
    t.match(seen, { address: gw, lladdr: peerMac, state: ['reachable'] }, `${gw} answered`)
  }
  one(router, 'resolveNeighbour', { $link: 'mv0' }, '192.0.2.77')
  const failed = await waitFor(() => {
    const n = one(router, 'getNeighbour', { $link: 'mv0' }, '192.0.2.77')
    return n?.state.includes('failed') === true ? n : null
  }, 15_000)
  t.match(failed, { state: ['failed'], lladdr: null }, 'nobody answered')
})

t.test('kernel errors come out as NetlinkError with the errno; a silent peer as ETIMEDOUT', privileged(), async t => {
  const ns = makeNs(t, 'er')
  addNic(ns, 'lan0')
  const [unreach, nodev, badParent] = ops(ns, [
    { op: 'replaceRoute', args: [{ family: 4, table: 100, dst: null, via: '203.0.113.1', oif: { $link: 'lan0' }, src: null }] },
    { op: 'setLinkUp', args: [987654, true] },
    { op: 'createMacvlan', args: [{ name: 'mv0', parentIndex: 987654, mode: 'bridge', mac: '02:00:00:00:00:01', alias: null }] }
  ])
  t.match(unreach?.error, { name: 'NetlinkError', code: 'ERR_NETLINK', errno: 'ENETUNREACH', message: /^replace route default via 203\.0\.113\.1 .*: ENETUNREACH$/ })
  t.match(nodev?.error, { name: 'NetlinkError', errno: 'ENODEV' })
  t.match(badParent?.error, { name: 'NetlinkError', errno: 'ENODEV', message: /create macvlan mv0/ })
  const timeout = JSON.parse(inNs(ns, 'node', new URL('../fixtures/netlink/timeout.mjs', import.meta.url).pathname))
  t.match(timeout.silent, { name: 'NetlinkError', code: 'ERR_NETLINK', errno: 'ETIMEDOUT', message: 'list links: ETIMEDOUT' })
  t.ok(timeout.kernelLinks >= 2, 'the kernel still answers a fresh handle')
})
