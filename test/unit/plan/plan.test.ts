import t from 'tap'
import { parseConfig } from '../../../src/config/config.js'
import type { Config } from '../../../src/config/types.js'
import { buildPlan, formatKernelForwards, formatPlan } from '../../../src/plan/plan.js'
import { planNetwork } from '../../../src/plan/network.js'
import type { HostFacts } from '../../../src/plan/types.js'

function config (env: Record<string, string>): Config {
  const r = parseConfig(env)
  if (!r.ok) throw new Error(r.issues.map((i) => i.message).join('; '))
  return r.config
}

const facts4: HostFacts = { parent: 'ens3', macvlanExists: false, podAddresses: [{ address: '198.51.100.1', family: 4 }] }
const facts6: HostFacts = { parent: 'ens3', macvlanExists: false, podAddresses: [{ address: '2001:db8:c::1', family: 6 }] }

t.test('redirect in a pod: the plan text is exactly this', async (t) => {
  const c = config({ EGRESS_SOURCE: '192.0.2.99/24', EGRESS_GATEWAY: '192.0.2.1', EGRESS_DESTINATION: '80 tcp 203.0.113.10\n8080 tcp 203.0.113.10 80\n203.0.113.11' })
  t.equal(formatPlan(buildPlan(c, facts4)), `mode: redirect

link:
  create macvlan0 type macvlan mode bridge link ens3 address b2:7a:70:50:9b:0c
addresses:
  192.0.2.99/24 dev macvlan0
routes:
  default via 192.0.2.1 dev macvlan0 src 192.0.2.99    # default via the gateway on the macvlan
sysctls:
  net.ipv4.conf.macvlan0.arp_notify = 1    # gratuitous ARP when the link comes up, so LAN caches learn our MAC
  net.ipv4.conf.eth0.forwarding = 1    # forward what clients send on the pod interface
  net.ipv4.conf.macvlan0.forwarding = 1    # forward the replies coming back on the macvlan
neighbour check: gateway 192.0.2.1 on macvlan0

nftables (one transaction, \`nft -f -\`; table ip egress_router):
add table ip egress_router { comment "managed by egress-router"; }
flush table ip egress_router
add chain ip egress_router nat_prerouting { type nat hook prerouting priority dstnat; policy accept; comment "managed by egress-router"; }
add chain ip egress_router filter_input { type filter hook input priority filter; policy accept; comment "managed by egress-router"; }
add chain ip egress_router filter_forward { type filter hook forward priority filter; policy accept; comment "managed by egress-router"; }
add chain ip egress_router nat_postrouting { type nat hook postrouting priority srcnat; policy accept; comment "managed by egress-router"; }
add chain ip egress_router mark_prerouting
delete chain ip egress_router mark_prerouting
add rule ip egress_router nat_prerouting iifname "eth0" fib daddr type local tcp dport 80 counter dnat to 203.0.113.10:80 comment "EGRESS_DESTINATION line 1: 80 tcp"
add rule ip egress_router nat_prerouting iifname "eth0" fib daddr type local tcp dport 8080 counter dnat to 203.0.113.10:80 comment "EGRESS_DESTINATION line 2: 8080 tcp"
add rule ip egress_router nat_prerouting iifname "eth0" fib daddr type local tcp dport 9090 accept comment "health probes reach the router itself"
add rule ip egress_router nat_prerouting iifname "eth0" fib daddr type local counter dnat to 203.0.113.11 comment "EGRESS_DESTINATION line 3: fallback"
add rule ip egress_router filter_input iifname "macvlan0" ct state established,related accept comment "replies from the LAN"
add rule ip egress_router filter_input iifname "macvlan0" counter drop comment "no new connections from the LAN"
add rule ip egress_router filter_forward iifname "macvlan0" ct state established,related accept comment "replies from the LAN"
add rule ip egress_router filter_forward iifname "macvlan0" counter drop comment "no new connections from the LAN"
add rule ip egress_router filter_forward ct direction original ct status dnat oifname != "macvlan0" counter drop comment "redirected traffic leaves only through the macvlan"
add rule ip egress_router nat_postrouting oifname "macvlan0" counter snat to 192.0.2.99 comment "leave the LAN side from EGRESS_SOURCE"

listeners:
  health *:9090
on stop: leave it to the pod namespace
`)
})

t.test('http-proxy on a host: policy routing only, prefix route in our table, listeners on the pod side', async (t) => {
  const c = config({ EGRESS_ROUTER_MODE: 'http-proxy', EGRESS_ROUTING: 'host', EGRESS_SOURCE: '192.0.2.99/24', EGRESS_GATEWAY: '192.0.2.1', EGRESS_HTTP_PROXY_DESTINATION: '*.example.com\n*', EGRESS_MACVLAN_MAC: '02:00:00:00:00:99' })
  const plan = buildPlan(c, facts4)
  const text = formatPlan(plan)
  t.match(text, 'create macvlan0 type macvlan mode bridge link ens3 address 02:00:00:00:00:99\n')
  t.match(text, '  192.0.2.99/24 dev macvlan0 noprefixroute\n')
  t.match(text, 'routes:\n  192.0.2.0/24 dev macvlan0 scope link src 192.0.2.99 table 6572    # the macvlan network, in our table only\n  default via 192.0.2.1 dev macvlan0 src 192.0.2.99 table 6572    #')
  t.match(text, 'rules:\n  priority 6572 from 192.0.2.99/32 lookup 6572    #')
  t.notMatch(text, 'fwmark', 'no mark rule: the proxy binds to EGRESS_SOURCE itself')
  t.match(text, 'net.ipv4.conf.macvlan0.rp_filter = 2')
  t.notMatch(text, 'forwarding', 'a proxy forwards nothing in the kernel')
  t.notMatch(text, 'dnat', 'no DNAT in proxy modes')
  t.match(text, 'listeners:\n  http-proxy 198.51.100.1:8080\n  health *:9090\n')
  t.match(text, 'on stop: remove everything created (host routing)')
  t.equal(plan.cleanupOnStop, true)
})

t.test('redirect on a host marks redirected connections and routes them by the mark', async (t) => {
  const c = config({ EGRESS_ROUTING: 'host', EGRESS_SOURCE: '192.0.2.99', EGRESS_GATEWAY: '192.0.2.1', EGRESS_DESTINATION: '203.0.113.10' })
  const n = planNetwork(c, facts4)
  t.same(n.rules.map((r) => [r.priority, r.from?.address ?? null, r.fwmark, r.table]), [[6572, '192.0.2.99', null, 6572], [6573, null, 0x6572, 6572]])
  t.same(n.routes.map((r) => [r.dst === null ? 'default' : `${r.dst.address}/${r.dst.prefix}`, r.table]), [['192.0.2.1/32', 6572], ['default', 6572]], 'a /32 source: the gateway gets an on-link host route')
  t.same(n.addresses, [{ link: 'macvlan0', cidr: { address: '192.0.2.99', family: 4, prefix: 32 }, noPrefixRoute: true }])
})

t.test('dns-proxy with IPv6: ndisc_notify, no RA on the macvlan, one listener per forward', async (t) => {
  const c = config({ EGRESS_ROUTER_MODE: 'dns-proxy', EGRESS_SOURCE: '2001:db8:1::99/64', EGRESS_GATEWAY: '2001:db8:1::1', EGRESS_DNS_PROXY_DESTINATION: '5432 db.example.com\n8443 2001:db8:d::10 443', EGRESS_HEALTH_ADDRESS: '' })
  const plan = buildPlan(c, facts6)
  const text = formatPlan(plan)
  t.match(text, 'net.ipv6.conf.macvlan0.ndisc_notify = 1')
  t.match(text, 'net.ipv6.conf.macvlan0.accept_ra = 0')
  t.match(text, 'table ip6 egress_router')
  t.match(text, 'listeners:\n  dns-forward [2001:db8:c::1]:5432 -> db.example.com:5432    # line 1\n  dns-forward [2001:db8:c::1]:8443 -> [2001:db8:d::10]:443    # line 2\non stop')
  t.equal(plan.listeners.some((l) => l.kind === 'health'), false, 'an empty EGRESS_HEALTH_ADDRESS turns the health listener off')
})

t.test('dns-proxy with kernel forwarding: every forward is a DNAT rule with forwarding on, no listener; a name gets its rule once resolved', async (t) => {
  const forwards = '5432 203.0.113.10\n8443 db.example.com 443\n8080 203.0.113.11 80'
  const env = { EGRESS_ROUTER_MODE: 'dns-proxy', EGRESS_SOURCE: '192.0.2.99/24', EGRESS_GATEWAY: '192.0.2.1', EGRESS_DNS_PROXY_DESTINATION: forwards }
  const proxy = formatPlan(buildPlan(config(env), facts4))
  t.notMatch(proxy, 'forwarding = 1', 'proxy forwarding (the default): nothing is forwarded in the kernel')
  t.notMatch(proxy, 'dnat', 'and nothing is DNATed')
  t.match(proxy, 'listeners:\n  dns-forward 198.51.100.1:5432 -> 203.0.113.10:5432    # line 1\n  dns-forward 198.51.100.1:8443 -> db.example.com:443    # line 2\n  dns-forward 198.51.100.1:8080 -> 203.0.113.11:80    # line 3\n')

  const kernel = buildPlan(config({ ...env, EGRESS_DNS_PROXY_FORWARDING: 'kernel' }), facts4)
  const text = formatPlan(kernel)
  t.match(text, 'net.ipv4.conf.eth0.forwarding = 1')
  t.match(text, 'net.ipv4.conf.macvlan0.forwarding = 1')
  t.match(text, 'tcp dport 5432 counter dnat to 203.0.113.10:5432 comment "EGRESS_DNS_PROXY_DESTINATION line 1: 5432 tcp"')
  t.match(text, 'tcp dport 8080 counter dnat to 203.0.113.11:80 comment "EGRESS_DNS_PROXY_DESTINATION line 3: 8080 tcp"')
  t.notMatch(text, 'dport 8443', 'the host name has no rule before it resolves')
  t.same(kernel.listeners.filter((l) => l.kind === 'dns-forward'), [], 'and no forward has a listener')
  const resolved = buildPlan(config({ ...env, EGRESS_DNS_PROXY_FORWARDING: 'kernel' }), facts4, new Map([['db.example.com', [{ address: '203.0.113.12', family: 4 }]]]))
  t.match(formatPlan(resolved), 'tcp dport 8443 counter dnat to 203.0.113.12:443 comment "EGRESS_DNS_PROXY_DESTINATION line 2: 8443 tcp"', 'resolved: the name has its rule')
  t.same(resolved.network, kernel.network, 'and the network is the same')
  t.equal(formatKernelForwards(config({ ...env, EGRESS_DNS_PROXY_FORWARDING: 'kernel' })),
    'kernel forwards (DNAT rules, EGRESS_DNS_PROXY_FORWARDING=kernel; no listener):\n  tcp 5432 -> 203.0.113.10:5432    # line 1\n' +
    '  tcp 8443 -> db.example.com:443    # line 2; DNAT to its addresses once resolved, rewritten as they change\n  tcp 8080 -> 203.0.113.11:80    # line 3\n')
  t.equal(formatKernelForwards(config(env)), '', 'proxy forwarding: no such section')

  const hostRouting = planNetwork(config({ ...env, EGRESS_DNS_PROXY_FORWARDING: 'kernel', EGRESS_ROUTING: 'host' }), facts4)
  t.same(hostRouting.rules.map((r) => [r.priority, r.fwmark]), [[6572, null], [6573, 0x6572]], 'host routing: the mark rule routes the kernel forwards')
  const namesOnly = buildPlan(config({ ...env, EGRESS_DNS_PROXY_DESTINATION: '8443 db.example.com', EGRESS_DNS_PROXY_FORWARDING: 'kernel' }), facts4)
  t.match(formatPlan(namesOnly), 'net.ipv4.conf.eth0.forwarding = 1', 'forwarding is on for the setting, so a reload can add an IP forward to the network as set up')
  t.notMatch(formatPlan(namesOnly), 'dnat to', 'but there is no DNAT rule before the name resolves')
})

t.test('an existing link is adopted: no parent, no MAC, never created', async (t) => {
  const c = config({ EGRESS_SOURCE: '192.0.2.99/24', EGRESS_GATEWAY: '192.0.2.1', EGRESS_DESTINATION: '203.0.113.10', EGRESS_MACVLAN_NAME: 'net1' })
  const plan = buildPlan(c, { parent: null, macvlanExists: true, podAddresses: [] })
  t.same(plan.network.link, { action: 'adopt', name: 'net1', parent: null, mode: 'bridge', mac: null })
  t.match(formatPlan(plan), 'adopt existing net1 (made by someone else; never deleted by us)')
})

t.test('init mode plans no listeners; stable MACs follow the source, random ones the host facts', async (t) => {
  const c = config({ EGRESS_ROUTER_MODE: 'init', EGRESS_SOURCE: '192.0.2.99/24', EGRESS_GATEWAY: '192.0.2.1', EGRESS_DESTINATION: '203.0.113.10' })
  t.same(buildPlan(c, facts4).listeners, [])
  const other = config({ EGRESS_ROUTER_MODE: 'init', EGRESS_SOURCE: '192.0.2.98/24', EGRESS_GATEWAY: '192.0.2.1', EGRESS_DESTINATION: '203.0.113.10' })
  t.not(buildPlan(c, facts4).network.link.mac, buildPlan(other, facts4).network.link.mac)
  t.equal(buildPlan(c, facts4).network.link.mac, buildPlan(c, { ...facts4, parent: 'eth9' }).network.link.mac, 'the same source gives the same MAC on any node')
  const random = config({ EGRESS_ROUTER_MODE: 'init', EGRESS_SOURCE: '192.0.2.99/24', EGRESS_GATEWAY: '192.0.2.1', EGRESS_DESTINATION: '203.0.113.10', EGRESS_MACVLAN_MAC: 'random' })
  t.equal(buildPlan(random, { ...facts4, randomMac: '06:11:22:33:44:55' }).network.link.mac, '06:11:22:33:44:55')
  t.throws(() => buildPlan(random, facts4), { code: 'ERR_PLAN', message: /needs a drawn MAC/ })
})

t.test('without a parent link there is nothing to create the macvlan on', async (t) => {
  const c = config({ EGRESS_SOURCE: '192.0.2.99/24', EGRESS_GATEWAY: '192.0.2.1', EGRESS_DESTINATION: '203.0.113.10' })
  t.throws(() => buildPlan(c, { parent: null, macvlanExists: false, podAddresses: [] }), { code: 'ERR_PLAN', message: /no parent interface/ })
})
