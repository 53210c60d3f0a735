/**
 * Golden tests of the one nft text builder: the exact transaction piped to `nft -f -` for representative
 * configurations (knftables fake_test.go style), and — as root — proof that the kernel accepts each of them.
 */
import t from 'tap'
import type { Config, DnsForward, FallbackRedirect, IpAddress, PortRedirect } from '../../../src/config/types.js'
import type { ResolvedNames } from '../../../src/plan/kernel-nat.js'
import { nftPlan, renderNftScript } from '../../../src/plan/nft-script.js'
import { ALL_CHAINS, buildRuleset, FWMARK, OWNER_COMMENT, ROUTE_TABLE, TABLE } from '../../../src/plan/ruleset.js'
import * as marks from '../../../src/plan/marks.js'
import { ExecNft } from '../../../src/nft/runner.js'
import { NftError } from '../../../src/errors.js'
import { privileged } from '../../helpers/privileged.js'

const family = (address: string): 4 | 6 => (address.includes(':') ? 6 : 4)

function port (line: number, protocol: 'tcp' | 'udp', p: number, address: string, targetPort = p): PortRedirect {
  return { kind: 'port', line, protocol, port: p, target: { address, family: family(address) }, targetPort, targetPortGiven: targetPort !== p }
}

function fallback (line: number, address: string): FallbackRedirect {
  return { kind: 'fallback', line, target: { address, family: family(address) } }
}

function ipForward (line: number, p: number, address: string, targetPort = p): DnsForward {
  return { line, port: p, target: { kind: 'ip', address: { address, family: family(address) } }, targetPort }
}

function ip (address: string): IpAddress {
  return { address, family: family(address) }
}

function nameForward (line: number, p: number, name: string, targetPort = p): DnsForward {
  return { line, port: p, target: { kind: 'name', name }, targetPort }
}

function config (o: Partial<Config> = {}): Config {
  return {
    modeName: 'redirect',
    mode: 'redirect',
    source: { address: '192.0.2.99', family: 4, prefix: 24, prefixGiven: true },
    gateway: { address: '192.0.2.1', family: 4 },
    interface: null,
    macvlan: { name: 'macvlan0', mode: 'bridge', mac: { kind: 'stable' } },
    podInterface: 'eth0',
    routing: 'pod',
    redirect: { rules: [], fallback: null },
    httpProxy: null,
    dnsProxy: null,
    health: { host: '', port: 9090 },
    workers: 1,
    drainTimeoutMs: 25_000,
    dns: { minTtlMs: 2_000, maxTtlMs: 300_000, maxStaleMs: 86_400_000 },
    logLevel: 'info',
    sources: { destinationFile: null, httpProxyDestinationFile: null, dnsProxyDestinationFile: null },
    ...o
  }
}

/** `resolved`: the addresses the daemon's resolver holds for kernel forwards' host names */
const golden: Record<string, { title: string, config: Config, script: string, resolved?: ResolvedNames }> = {
  fallbackOnly: {
    config: config({ redirect: { rules: [], fallback: fallback(1, '203.0.113.10') } }),
    title: 'a single IP (fallback only) redirects every port and protocol except the health port',
    script: `
add table ip egress_router { comment "managed by egress-router"; }
flush table ip egress_router
add chain ip egress_router nat_prerouting { type nat hook prerouting priority dstnat; policy accept; comment "managed by egress-router"; }
add chain ip egress_router filter_input { type filter hook input priority filter; policy accept; comment "managed by egress-router"; }
add chain ip egress_router filter_forward { type filter hook forward priority filter; policy accept; comment "managed by egress-router"; }
add chain ip egress_router nat_postrouting { type nat hook postrouting priority srcnat; policy accept; comment "managed by egress-router"; }
add chain ip egress_router mark_prerouting
delete chain ip egress_router mark_prerouting
add rule ip egress_router nat_prerouting iifname "eth0" fib daddr type local tcp dport 9090 accept comment "health probes reach the router itself"
add rule ip egress_router nat_prerouting iifname "eth0" fib daddr type local counter dnat to 203.0.113.10 comment "EGRESS_DESTINATION line 1: fallback"
add rule ip egress_router filter_input iifname "macvlan0" ct state established,related accept comment "replies from the LAN"
add rule ip egress_router filter_input iifname "macvlan0" counter drop comment "no new connections from the LAN"
add rule ip egress_router filter_forward iifname "macvlan0" ct state established,related accept comment "replies from the LAN"
add rule ip egress_router filter_forward iifname "macvlan0" counter drop comment "no new connections from the LAN"
add rule ip egress_router filter_forward ct direction original ct status dnat oifname != "macvlan0" counter drop comment "redirected traffic leaves only through the macvlan"
add rule ip egress_router nat_postrouting oifname "macvlan0" counter snat to 192.0.2.99 comment "leave the LAN side from EGRESS_SOURCE"
`.slice(1)
  },
  portsAndFallback: {
    config: config({ redirect: { rules: [port(1, 'tcp', 80, '203.0.113.10'), port(2, 'tcp', 8080, '203.0.113.10', 80), port(3, 'udp', 53, '203.0.113.53')], fallback: fallback(4, '203.0.113.99') } }),
    title: 'ports, a port rewrite, udp and a fallback',
    script: `
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
add rule ip egress_router nat_prerouting iifname "eth0" fib daddr type local udp dport 53 counter dnat to 203.0.113.53:53 comment "EGRESS_DESTINATION line 3: 53 udp"
add rule ip egress_router nat_prerouting iifname "eth0" fib daddr type local tcp dport 9090 accept comment "health probes reach the router itself"
add rule ip egress_router nat_prerouting iifname "eth0" fib daddr type local counter dnat to 203.0.113.99 comment "EGRESS_DESTINATION line 4: fallback"
add rule ip egress_router filter_input iifname "macvlan0" ct state established,related accept comment "replies from the LAN"
add rule ip egress_router filter_input iifname "macvlan0" counter drop comment "no new connections from the LAN"
add rule ip egress_router filter_forward iifname "macvlan0" ct state established,related accept comment "replies from the LAN"
add rule ip egress_router filter_forward iifname "macvlan0" counter drop comment "no new connections from the LAN"
add rule ip egress_router filter_forward ct direction original ct status dnat oifname != "macvlan0" counter drop comment "redirected traffic leaves only through the macvlan"
add rule ip egress_router nat_postrouting oifname "macvlan0" counter snat to 192.0.2.99 comment "leave the LAN side from EGRESS_SOURCE"
`.slice(1)
  },
  noFallback: {
    config: config({ redirect: { rules: [port(1, 'tcp', 80, '203.0.113.10'), port(2, 'udp', 53, '203.0.113.53', 5353)], fallback: null } }),
    title: 'without a fallback other ports to the router are refused, health and ping stay open',
    script: `
add table ip egress_router { comment "managed by egress-router"; }
flush table ip egress_router
add chain ip egress_router nat_prerouting { type nat hook prerouting priority dstnat; policy accept; comment "managed by egress-router"; }
add chain ip egress_router filter_input { type filter hook input priority filter; policy accept; comment "managed by egress-router"; }
add chain ip egress_router filter_forward { type filter hook forward priority filter; policy accept; comment "managed by egress-router"; }
add chain ip egress_router nat_postrouting { type nat hook postrouting priority srcnat; policy accept; comment "managed by egress-router"; }
add chain ip egress_router mark_prerouting
delete chain ip egress_router mark_prerouting
add rule ip egress_router nat_prerouting iifname "eth0" fib daddr type local tcp dport 80 counter dnat to 203.0.113.10:80 comment "EGRESS_DESTINATION line 1: 80 tcp"
add rule ip egress_router nat_prerouting iifname "eth0" fib daddr type local udp dport 53 counter dnat to 203.0.113.53:5353 comment "EGRESS_DESTINATION line 2: 53 udp"
add rule ip egress_router filter_input iifname "macvlan0" ct state established,related accept comment "replies from the LAN"
add rule ip egress_router filter_input iifname "macvlan0" counter drop comment "no new connections from the LAN"
add rule ip egress_router filter_input iifname "eth0" ct state established,related accept comment "replies on the pod side"
add rule ip egress_router filter_input iifname "eth0" tcp dport 9090 accept comment "health probes reach the router itself"
add rule ip egress_router filter_input iifname "eth0" icmp type echo-request accept comment "ping"
add rule ip egress_router filter_input iifname "eth0" meta l4proto tcp counter reject with tcp reset comment "no rule for this port"
add rule ip egress_router filter_input iifname "eth0" counter reject with icmp port-unreachable comment "no rule for this port"
add rule ip egress_router filter_forward iifname "macvlan0" ct state established,related accept comment "replies from the LAN"
add rule ip egress_router filter_forward iifname "macvlan0" counter drop comment "no new connections from the LAN"
add rule ip egress_router filter_forward ct direction original ct status dnat oifname != "macvlan0" counter drop comment "redirected traffic leaves only through the macvlan"
add rule ip egress_router nat_postrouting oifname "macvlan0" counter snat to 192.0.2.99 comment "leave the LAN side from EGRESS_SOURCE"
`.slice(1)
  },
  httpProxy: {
    config: config({ modeName: 'http-proxy', mode: 'http-proxy', redirect: null, httpProxy: { port: 8080, connectPorts: '*', clients: null, accessLog: true, acl: [] } }),
    title: 'http-proxy: no DNAT, SNAT on the macvlan, LAN guarded',
    script: `
add table ip egress_router { comment "managed by egress-router"; }
flush table ip egress_router
add chain ip egress_router filter_input { type filter hook input priority filter; policy accept; comment "managed by egress-router"; }
add chain ip egress_router filter_forward { type filter hook forward priority filter; policy accept; comment "managed by egress-router"; }
add chain ip egress_router nat_postrouting { type nat hook postrouting priority srcnat; policy accept; comment "managed by egress-router"; }
add chain ip egress_router nat_prerouting
delete chain ip egress_router nat_prerouting
add chain ip egress_router mark_prerouting
delete chain ip egress_router mark_prerouting
add rule ip egress_router filter_input iifname "macvlan0" ct state established,related accept comment "replies from the LAN"
add rule ip egress_router filter_input iifname "macvlan0" counter drop comment "no new connections from the LAN"
add rule ip egress_router filter_forward iifname "macvlan0" ct state established,related accept comment "replies from the LAN"
add rule ip egress_router filter_forward iifname "macvlan0" counter drop comment "no new connections from the LAN"
add rule ip egress_router nat_postrouting oifname "macvlan0" counter snat to 192.0.2.99 comment "leave the LAN side from EGRESS_SOURCE"
`.slice(1)
  },
  dnsProxy: {
    config: config({ modeName: 'dns-proxy', mode: 'dns-proxy', redirect: null, dnsProxy: { forwards: [], forwarding: 'proxy' } }),
    title: 'dns-proxy: the same shape as http-proxy',
    script: `
add table ip egress_router { comment "managed by egress-router"; }
flush table ip egress_router
add chain ip egress_router filter_input { type filter hook input priority filter; policy accept; comment "managed by egress-router"; }
add chain ip egress_router filter_forward { type filter hook forward priority filter; policy accept; comment "managed by egress-router"; }
add chain ip egress_router nat_postrouting { type nat hook postrouting priority srcnat; policy accept; comment "managed by egress-router"; }
add chain ip egress_router nat_prerouting
delete chain ip egress_router nat_prerouting
add chain ip egress_router mark_prerouting
delete chain ip egress_router mark_prerouting
add rule ip egress_router filter_input iifname "macvlan0" ct state established,related accept comment "replies from the LAN"
add rule ip egress_router filter_input iifname "macvlan0" counter drop comment "no new connections from the LAN"
add rule ip egress_router filter_forward iifname "macvlan0" ct state established,related accept comment "replies from the LAN"
add rule ip egress_router filter_forward iifname "macvlan0" counter drop comment "no new connections from the LAN"
add rule ip egress_router nat_postrouting oifname "macvlan0" counter snat to 192.0.2.99 comment "leave the LAN side from EGRESS_SOURCE"
`.slice(1)
  },
  dnsProxyKernel: {
    config: config({ modeName: 'dns-proxy', mode: 'dns-proxy', redirect: null, dnsProxy: { forwarding: 'kernel', forwards: [ipForward(1, 5432, '203.0.113.10'), nameForward(2, 8443, 'svc.example.com'), ipForward(3, 8080, '203.0.113.11', 80)] } }),
    title: 'dns-proxy with kernel forwarding: DNAT rules (tcp, no fallback, no refusal of other ports); a host name not resolved yet has none',
    script: `
add table ip egress_router { comment "managed by egress-router"; }
flush table ip egress_router
add chain ip egress_router nat_prerouting { type nat hook prerouting priority dstnat; policy accept; comment "managed by egress-router"; }
add chain ip egress_router filter_input { type filter hook input priority filter; policy accept; comment "managed by egress-router"; }
add chain ip egress_router filter_forward { type filter hook forward priority filter; policy accept; comment "managed by egress-router"; }
add chain ip egress_router nat_postrouting { type nat hook postrouting priority srcnat; policy accept; comment "managed by egress-router"; }
add chain ip egress_router mark_prerouting
delete chain ip egress_router mark_prerouting
add rule ip egress_router nat_prerouting iifname "eth0" fib daddr type local tcp dport 5432 counter dnat to 203.0.113.10:5432 comment "EGRESS_DNS_PROXY_DESTINATION line 1: 5432 tcp"
add rule ip egress_router nat_prerouting iifname "eth0" fib daddr type local tcp dport 8080 counter dnat to 203.0.113.11:80 comment "EGRESS_DNS_PROXY_DESTINATION line 3: 8080 tcp"
add rule ip egress_router filter_input iifname "macvlan0" ct state established,related accept comment "replies from the LAN"
add rule ip egress_router filter_input iifname "macvlan0" counter drop comment "no new connections from the LAN"
add rule ip egress_router filter_forward iifname "macvlan0" ct state established,related accept comment "replies from the LAN"
add rule ip egress_router filter_forward iifname "macvlan0" counter drop comment "no new connections from the LAN"
add rule ip egress_router filter_forward ct direction original ct status dnat oifname != "macvlan0" counter drop comment "redirected traffic leaves only through the macvlan"
add rule ip egress_router nat_postrouting oifname "macvlan0" counter snat to 192.0.2.99 comment "leave the LAN side from EGRESS_SOURCE"
`.slice(1)
  },
  dnsProxyKernelHost: {
    config: config({ modeName: 'dns-proxy', mode: 'dns-proxy', routing: 'host', podInterface: 'cni0', redirect: null, dnsProxy: { forwarding: 'kernel', forwards: [ipForward(1, 5432, '203.0.113.10')] } }),
    title: 'dns-proxy kernel forwards in host routing are marked for the policy rule, as redirected connections are',
    script: `
add table ip egress_router { comment "managed by egress-router"; }
flush table ip egress_router
add chain ip egress_router nat_prerouting { type nat hook prerouting priority dstnat; policy accept; comment "managed by egress-router"; }
add chain ip egress_router mark_prerouting { type filter hook prerouting priority dstnat + 10; policy accept; comment "managed by egress-router"; }
add chain ip egress_router filter_input { type filter hook input priority filter; policy accept; comment "managed by egress-router"; }
add chain ip egress_router filter_forward { type filter hook forward priority filter; policy accept; comment "managed by egress-router"; }
add chain ip egress_router nat_postrouting { type nat hook postrouting priority srcnat; policy accept; comment "managed by egress-router"; }
add rule ip egress_router nat_prerouting iifname "cni0" fib daddr type local tcp dport 5432 ct mark set 0x00006572 counter dnat to 203.0.113.10:5432 comment "EGRESS_DNS_PROXY_DESTINATION line 1: 5432 tcp"
add rule ip egress_router mark_prerouting ct direction original ct mark 0x00006572 meta mark set ct mark comment "redirected connections use routing table 6572"
add rule ip egress_router filter_input iifname "macvlan0" ct state established,related accept comment "replies from the LAN"
add rule ip egress_router filter_input iifname "macvlan0" counter drop comment "no new connections from the LAN"
add rule ip egress_router filter_forward iifname "macvlan0" ct state established,related accept comment "replies from the LAN"
add rule ip egress_router filter_forward iifname "macvlan0" counter drop comment "no new connections from the LAN"
add rule ip egress_router filter_forward ct direction original ct status dnat oifname != "macvlan0" counter drop comment "redirected traffic leaves only through the macvlan"
add rule ip egress_router nat_postrouting oifname "macvlan0" counter snat to 192.0.2.99 comment "leave the LAN side from EGRESS_SOURCE"
`.slice(1)
  },
  dnsProxyKernelNamesOnly: {
    config: config({ modeName: 'dns-proxy', mode: 'dns-proxy', redirect: null, dnsProxy: { forwarding: 'kernel', forwards: [nameForward(1, 8443, 'svc.example.com')] } }),
    title: 'dns-proxy with kernel forwarding and host names only, none resolved yet: the DNAT chain is there, empty, so that an answer only adds rules',
    script: `
add table ip egress_router { comment "managed by egress-router"; }
flush table ip egress_router
add chain ip egress_router nat_prerouting { type nat hook prerouting priority dstnat; policy accept; comment "managed by egress-router"; }
add chain ip egress_router filter_input { type filter hook input priority filter; policy accept; comment "managed by egress-router"; }
add chain ip egress_router filter_forward { type filter hook forward priority filter; policy accept; comment "managed by egress-router"; }
add chain ip egress_router nat_postrouting { type nat hook postrouting priority srcnat; policy accept; comment "managed by egress-router"; }
add chain ip egress_router mark_prerouting
delete chain ip egress_router mark_prerouting
add rule ip egress_router filter_input iifname "macvlan0" ct state established,related accept comment "replies from the LAN"
add rule ip egress_router filter_input iifname "macvlan0" counter drop comment "no new connections from the LAN"
add rule ip egress_router filter_forward iifname "macvlan0" ct state established,related accept comment "replies from the LAN"
add rule ip egress_router filter_forward iifname "macvlan0" counter drop comment "no new connections from the LAN"
add rule ip egress_router filter_forward ct direction original ct status dnat oifname != "macvlan0" counter drop comment "redirected traffic leaves only through the macvlan"
add rule ip egress_router nat_postrouting oifname "macvlan0" counter snat to 192.0.2.99 comment "leave the LAN side from EGRESS_SOURCE"
`.slice(1)
  },
  dnsProxyKernelResolved: {
    config: config({ modeName: 'dns-proxy', mode: 'dns-proxy', redirect: null, dnsProxy: { forwarding: 'kernel', forwards: [ipForward(1, 5432, '203.0.113.10'), nameForward(2, 8443, 'svc.example.com', 443), nameForward(3, 8444, 'one.example.com'), nameForward(4, 8445, 'v6only.example.com')] } }),
    resolved: new Map([
      // the answer's order, a repeat and the other family do not matter: sorted, once, EGRESS_SOURCE's family only
      ['svc.example.com', [ip('203.0.113.21'), ip('2001:db8::5'), ip('203.0.113.20'), ip('203.0.113.21')]],
      ['one.example.com', [ip('203.0.113.30')]],
      ['v6only.example.com', [ip('2001:db8::6')]]
    ]),
    title: 'dns-proxy kernel forwards to resolved host names: one address is a plain DNAT, several are taken in turn (numgen inc); a name with no usable address has no rule',
    script: `
add table ip egress_router { comment "managed by egress-router"; }
flush table ip egress_router
add chain ip egress_router nat_prerouting { type nat hook prerouting priority dstnat; policy accept; comment "managed by egress-router"; }
add chain ip egress_router filter_input { type filter hook input priority filter; policy accept; comment "managed by egress-router"; }
add chain ip egress_router filter_forward { type filter hook forward priority filter; policy accept; comment "managed by egress-router"; }
add chain ip egress_router nat_postrouting { type nat hook postrouting priority srcnat; policy accept; comment "managed by egress-router"; }
add chain ip egress_router mark_prerouting
delete chain ip egress_router mark_prerouting
add rule ip egress_router nat_prerouting iifname "eth0" fib daddr type local tcp dport 5432 counter dnat to 203.0.113.10:5432 comment "EGRESS_DNS_PROXY_DESTINATION line 1: 5432 tcp"
add rule ip egress_router nat_prerouting iifname "eth0" fib daddr type local tcp dport 8443 counter dnat to numgen inc mod 2 map { 0 : 203.0.113.20, 1 : 203.0.113.21 } : 443 comment "EGRESS_DNS_PROXY_DESTINATION line 2: 8443 tcp"
add rule ip egress_router nat_prerouting iifname "eth0" fib daddr type local tcp dport 8444 counter dnat to 203.0.113.30:8444 comment "EGRESS_DNS_PROXY_DESTINATION line 3: 8444 tcp"
add rule ip egress_router filter_input iifname "macvlan0" ct state established,related accept comment "replies from the LAN"
add rule ip egress_router filter_input iifname "macvlan0" counter drop comment "no new connections from the LAN"
add rule ip egress_router filter_forward iifname "macvlan0" ct state established,related accept comment "replies from the LAN"
add rule ip egress_router filter_forward iifname "macvlan0" counter drop comment "no new connections from the LAN"
add rule ip egress_router filter_forward ct direction original ct status dnat oifname != "macvlan0" counter drop comment "redirected traffic leaves only through the macvlan"
add rule ip egress_router nat_postrouting oifname "macvlan0" counter snat to 192.0.2.99 comment "leave the LAN side from EGRESS_SOURCE"
`.slice(1)
  },
  dnsProxyKernelResolved6: {
    config: config({ modeName: 'dns-proxy', mode: 'dns-proxy', source: { address: '2001:db8::99', family: 6, prefix: 64, prefixGiven: true }, gateway: { address: '2001:db8::1', family: 6 }, redirect: null, dnsProxy: { forwarding: 'kernel', forwards: [nameForward(1, 8443, 'svc.example.com', 443)] } }),
    resolved: new Map([['svc.example.com', [ip('2001:db8:1::11'), ip('192.0.2.5'), ip('2001:db8:1::10')]]]),
    title: 'IPv6 kernel forward to a host name with several addresses: bare addresses in the map, the port after it',
    script: `
add table ip6 egress_router { comment "managed by egress-router"; }
flush table ip6 egress_router
add chain ip6 egress_router nat_prerouting { type nat hook prerouting priority dstnat; policy accept; comment "managed by egress-router"; }
add chain ip6 egress_router filter_input { type filter hook input priority filter; policy accept; comment "managed by egress-router"; }
add chain ip6 egress_router filter_forward { type filter hook forward priority filter; policy accept; comment "managed by egress-router"; }
add chain ip6 egress_router nat_postrouting { type nat hook postrouting priority srcnat; policy accept; comment "managed by egress-router"; }
add chain ip6 egress_router mark_prerouting
delete chain ip6 egress_router mark_prerouting
add rule ip6 egress_router nat_prerouting iifname "eth0" fib daddr type local tcp dport 8443 counter dnat to numgen inc mod 2 map { 0 : 2001:db8:1::10, 1 : 2001:db8:1::11 } : 443 comment "EGRESS_DNS_PROXY_DESTINATION line 1: 8443 tcp"
add rule ip6 egress_router filter_input iifname "macvlan0" ct state established,related accept comment "replies from the LAN"
add rule ip6 egress_router filter_input iifname "macvlan0" icmpv6 type { destination-unreachable, packet-too-big, time-exceeded, parameter-problem, mld-listener-query, nd-router-advert, nd-neighbor-solicit, nd-neighbor-advert } accept comment "neighbour discovery, MLD and ICMPv6 errors"
add rule ip6 egress_router filter_input iifname "macvlan0" counter drop comment "no new connections from the LAN"
add rule ip6 egress_router filter_forward iifname "macvlan0" ct state established,related accept comment "replies from the LAN"
add rule ip6 egress_router filter_forward iifname "macvlan0" counter drop comment "no new connections from the LAN"
add rule ip6 egress_router filter_forward ct direction original ct status dnat oifname != "macvlan0" counter drop comment "redirected traffic leaves only through the macvlan"
add rule ip6 egress_router nat_postrouting oifname "macvlan0" counter snat to 2001:db8::99 comment "leave the LAN side from EGRESS_SOURCE"
`.slice(1)
  },
  hostRouting: {
    config: config({ routing: 'host', interface: 'eth1', podInterface: 'cni0', redirect: { rules: [port(1, 'tcp', 443, '203.0.113.10')], fallback: fallback(2, '203.0.113.99') } }),
    title: 'host routing marks redirected connections and leaves unredirected ports to the host',
    script: `
add table ip egress_router { comment "managed by egress-router"; }
flush table ip egress_router
add chain ip egress_router nat_prerouting { type nat hook prerouting priority dstnat; policy accept; comment "managed by egress-router"; }
add chain ip egress_router mark_prerouting { type filter hook prerouting priority dstnat + 10; policy accept; comment "managed by egress-router"; }
add chain ip egress_router filter_input { type filter hook input priority filter; policy accept; comment "managed by egress-router"; }
add chain ip egress_router filter_forward { type filter hook forward priority filter; policy accept; comment "managed by egress-router"; }
add chain ip egress_router nat_postrouting { type nat hook postrouting priority srcnat; policy accept; comment "managed by egress-router"; }
add rule ip egress_router nat_prerouting iifname "cni0" fib daddr type local tcp dport 443 ct mark set 0x00006572 counter dnat to 203.0.113.10:443 comment "EGRESS_DESTINATION line 1: 443 tcp"
add rule ip egress_router nat_prerouting iifname "cni0" fib daddr type local tcp dport 9090 accept comment "health probes reach the router itself"
add rule ip egress_router nat_prerouting iifname "cni0" fib daddr type local ct mark set 0x00006572 counter dnat to 203.0.113.99 comment "EGRESS_DESTINATION line 2: fallback"
add rule ip egress_router mark_prerouting ct direction original ct mark 0x00006572 meta mark set ct mark comment "redirected connections use routing table 6572"
add rule ip egress_router filter_input iifname "macvlan0" ct state established,related accept comment "replies from the LAN"
add rule ip egress_router filter_input iifname "macvlan0" counter drop comment "no new connections from the LAN"
add rule ip egress_router filter_forward iifname "macvlan0" ct state established,related accept comment "replies from the LAN"
add rule ip egress_router filter_forward iifname "macvlan0" counter drop comment "no new connections from the LAN"
add rule ip egress_router filter_forward ct direction original ct status dnat oifname != "macvlan0" counter drop comment "redirected traffic leaves only through the macvlan"
add rule ip egress_router nat_postrouting oifname "macvlan0" counter snat to 192.0.2.99 comment "leave the LAN side from EGRESS_SOURCE"
`.slice(1)
  },
  ipv6: {
    config: config({ source: { address: '2001:db8::99', family: 6, prefix: 64, prefixGiven: true }, gateway: { address: '2001:db8::1', family: 6 }, redirect: { rules: [port(1, 'tcp', 80, '2001:db8:1::10'), port(2, 'udp', 53, '2001:db8:1::53', 5353)], fallback: null } }),
    title: 'IPv6: ip6 family, icmpv6, bracketed DNAT targets, neighbour discovery passes',
    script: `
add table ip6 egress_router { comment "managed by egress-router"; }
flush table ip6 egress_router
add chain ip6 egress_router nat_prerouting { type nat hook prerouting priority dstnat; policy accept; comment "managed by egress-router"; }
add chain ip6 egress_router filter_input { type filter hook input priority filter; policy accept; comment "managed by egress-router"; }
add chain ip6 egress_router filter_forward { type filter hook forward priority filter; policy accept; comment "managed by egress-router"; }
add chain ip6 egress_router nat_postrouting { type nat hook postrouting priority srcnat; policy accept; comment "managed by egress-router"; }
add chain ip6 egress_router mark_prerouting
delete chain ip6 egress_router mark_prerouting
add rule ip6 egress_router nat_prerouting iifname "eth0" fib daddr type local tcp dport 80 counter dnat to [2001:db8:1::10]:80 comment "EGRESS_DESTINATION line 1: 80 tcp"
add rule ip6 egress_router nat_prerouting iifname "eth0" fib daddr type local udp dport 53 counter dnat to [2001:db8:1::53]:5353 comment "EGRESS_DESTINATION line 2: 53 udp"
add rule ip6 egress_router filter_input iifname "macvlan0" ct state established,related accept comment "replies from the LAN"
add rule ip6 egress_router filter_input iifname "macvlan0" icmpv6 type { destination-unreachable, packet-too-big, time-exceeded, parameter-problem, mld-listener-query, nd-router-advert, nd-neighbor-solicit, nd-neighbor-advert } accept comment "neighbour discovery, MLD and ICMPv6 errors"
add rule ip6 egress_router filter_input iifname "macvlan0" counter drop comment "no new connections from the LAN"
add rule ip6 egress_router filter_input iifname "eth0" ct state established,related accept comment "replies on the pod side"
add rule ip6 egress_router filter_input iifname "eth0" tcp dport 9090 accept comment "health probes reach the router itself"
add rule ip6 egress_router filter_input iifname "eth0" icmpv6 type { destination-unreachable, packet-too-big, time-exceeded, parameter-problem, mld-listener-query, nd-router-advert, nd-neighbor-solicit, nd-neighbor-advert, echo-request } accept comment "ping, neighbour discovery, MLD and ICMPv6 errors"
add rule ip6 egress_router filter_input iifname "eth0" meta l4proto tcp counter reject with tcp reset comment "no rule for this port"
add rule ip6 egress_router filter_input iifname "eth0" counter reject with icmpv6 port-unreachable comment "no rule for this port"
add rule ip6 egress_router filter_forward iifname "macvlan0" ct state established,related accept comment "replies from the LAN"
add rule ip6 egress_router filter_forward iifname "macvlan0" counter drop comment "no new connections from the LAN"
add rule ip6 egress_router filter_forward ct direction original ct status dnat oifname != "macvlan0" counter drop comment "redirected traffic leaves only through the macvlan"
add rule ip6 egress_router nat_postrouting oifname "macvlan0" counter snat to 2001:db8::99 comment "leave the LAN side from EGRESS_SOURCE"
`.slice(1)
  }
}

const macvlan = { macvlan: 'macvlan0' }

// a golden script written once and shared by another configuration
for (const g of Object.values(golden)) {
  if (g.script === 'same as dnsProxy') g.script = golden.dnsProxy.script
}

for (const g of Object.values(golden)) {
  t.test(g.title, async t => {
    t.equal(nftPlan(g.config, { ...macvlan, resolved: g.resolved }).script, g.script)
  })
}

t.test('the plan names family ip for IPv4 and ip6 for IPv6, and our one table', async t => {
  t.match(nftPlan(golden.portsAndFallback!.config, macvlan), { family: 'ip', table: 'egress_router' })
  t.match(nftPlan(golden.ipv6!.config, macvlan), { family: 'ip6', table: 'egress_router' })
  t.equal(TABLE, 'egress_router')
})

t.test('init and legacy render exactly what redirect renders', async t => {
  const base = golden.portsAndFallback!.config
  const expected = nftPlan(base, macvlan).script
  t.equal(nftPlan({ ...base, modeName: 'init', mode: 'init' }, macvlan).script, expected)
  t.equal(nftPlan({ ...base, modeName: 'legacy', mode: 'redirect' }, macvlan).script, expected)
})

t.test('every script is add table, flush table, then only our own table is named', async t => {
  for (const [name, g] of Object.entries(golden)) {
    const lines = g.script.trimEnd().split('\n')
    const t0 = `${nftPlan(g.config, { ...macvlan, resolved: g.resolved }).family} egress_router`
    t.equal(lines[0], `add table ${t0} { comment "${OWNER_COMMENT}"; }`, name)
    t.equal(lines[1], `flush table ${t0}`, name)
    for (const line of lines) {
      t.ok(line.startsWith('add ') || line.startsWith('delete chain ') || line.startsWith('flush table '), `${name}: ${line}`)
      t.ok(line.includes(` ${t0}`), `${name}: only our table: ${line}`)
    }
    t.notMatch(g.script, /flush ruleset|delete table/, name)
    for (const line of lines.filter(l => /^add chain .*\{/.test(l))) {
      t.ok(line.includes(`comment "${OWNER_COMMENT}"`), `${name}: chain carries the owner comment: ${line}`)
    }
  }
})

t.test('chains this configuration does not use are removed in the same transaction', async t => {
  for (const g of Object.values(golden)) {
    const r = buildRuleset(g.config, { ...macvlan, resolved: g.resolved })
    t.same([...r.chains.map(c => c.name), ...r.unusedChains].sort(), [...ALL_CHAINS].sort())
  }
  t.same(buildRuleset(golden.httpProxy!.config, macvlan).unusedChains, ['nat_prerouting', 'mark_prerouting'])
  t.same(buildRuleset(golden.hostRouting!.config, macvlan).unusedChains, [])
})

t.test('without a health listener no rule exempts a health port', async t => {
  for (const g of [golden.fallbackOnly!, golden.noFallback!, golden.ipv6!]) {
    const script = nftPlan({ ...g.config, health: null }, macvlan).script
    t.notMatch(script, /health|9090/)
    t.equal(script, g.script.split('\n').filter(l => !l.includes('health probes')).join('\n'))
  }
})

t.test('the health exemption follows the configured port', async t => {
  const script = nftPlan({ ...golden.fallbackOnly!.config, health: { host: '127.0.0.1', port: 19090 } }, macvlan).script
  t.match(script, /iifname "eth0" fib daddr type local tcp dport 19090 accept/)
})

t.test('host routing uses the mark and table the network plan uses', async t => {
  t.equal(FWMARK, marks.FWMARK)
  t.equal(ROUTE_TABLE, marks.ROUTE_TABLE)
  const script = golden.hostRouting!.script
  const hex = `0x${FWMARK.toString(16).padStart(8, '0')}`
  t.equal(script.split(`ct mark set ${hex}`).length - 1, 2, 'every DNAT rule marks its connection')
  t.match(script, `ct direction original ct mark ${hex} meta mark set ct mark`)
  t.notMatch(golden.portsAndFallback!.script, /ct mark|meta mark/, 'pod routing needs no mark')
})

t.test('a name nft cannot quote is refused instead of changing the meaning of the script', async t => {
  const ruleset = buildRuleset({ ...golden.noFallback!.config, podInterface: 'eth0" accept #' }, macvlan)
  t.throws(() => renderNftScript(ruleset), /cannot quote/)
})

t.test('the kernel accepts every golden script (nft --check)', privileged(), async t => {
  const nft = new ExecNft()
  for (const [name, g] of Object.entries(golden)) {
    await t.resolves(nft.check(g.script), name)
  }
  // the check can fail: a script the kernel refuses is reported with nft's own words
  const broken = golden.portsAndFallback!.script.replace('dnat to 203.0.113.10:80', 'dnat to 203.0.113.10:99999')
  const err = await nft.check(broken).then(() => null, (e: unknown) => e)
  t.ok(err instanceof NftError, 'NftError')
  t.match((err as NftError).stderr, /99999/)
})
