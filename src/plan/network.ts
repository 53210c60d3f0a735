/**
 * The network part of the plan (pure): link, addresses, routes, policy rules and sysctls, from the
 * configuration and a few host facts.
 *
 * pod routing: the pod has its own namespace, so its default route moves to the gateway on the macvlan;
 * routes toward clients, the cluster and the node stay on the pod interface (a macvlan never reaches its own
 * parent, so those could not go anywhere else anyway).
 * host routing: the host's main table is left byte-for-byte alone; our own table holds the default via the
 * gateway and is selected by `from EGRESS_SOURCE` (sockets bound to it: the proxies) and by the firewall mark the
 * NAT rules put on redirected connections.
 */
import { cidrContains, networkAddress } from '../config/addr.js'
import type { Cidr, Config, IpAddress } from '../config/types.js'
import { stableMac } from '../netlink/mac.js'
import { relaysInKernel } from './kernel-nat.js'
import { FWMARK, ROUTE_TABLE, RULE_PRIORITY_FROM, RULE_PRIORITY_MARK } from './marks.js'
import type { HostFacts, NetworkPlan, RoutePlan, RulePlan, SysctlPlan } from './types.js'

export class PlanError extends Error {
  readonly code = 'ERR_PLAN'
}

/** The network of `address/prefix`, e.g. 192.0.2.99/24 → 192.0.2.0/24. */
export function networkOf (cidr: Cidr): Cidr {
  return { address: networkAddress(cidr, cidr.prefix), family: cidr.family, prefix: cidr.prefix }
}

function hostCidr (a: IpAddress): Cidr {
  return { address: a.address, family: a.family, prefix: a.family === 4 ? 32 : 128 }
}

export function macFor (config: Config, facts: HostFacts): string | null {
  if (facts.macvlanExists) return null
  switch (config.macvlan.mac.kind) {
    case 'fixed': return config.macvlan.mac.mac
    case 'stable': return stableMac(config.source.address)
    case 'random':
      if (facts.randomMac === undefined) throw new PlanError('EGRESS_MACVLAN_MAC=random needs a drawn MAC in the host facts')
      return facts.randomMac
  }
}

export function planNetwork (config: Config, facts: HostFacts): NetworkPlan {
  if (!facts.macvlanExists && facts.parent === null) {
    throw new PlanError('no parent interface: EGRESS_INTERFACE is not set and there is no default route to take the link from')
  }
  const family = config.source.family
  const link = config.macvlan.name
  const source: IpAddress = { address: config.source.address, family }
  const gateway = config.gateway
  const host = config.routing === 'host'
  const sourceNet = networkOf(config.source)
  const gatewayOnLink = config.source.prefixGiven && cidrContains(config.source, gateway)

  const sysctls: SysctlPlan[] = []
  // Before the link goes up: the kernel announces the address (gratuitous ARP / unsolicited NA) on up.
  if (family === 4) {
    sysctls.push({ path: `net/ipv4/conf/${link}/arp_notify`, value: '1', why: 'gratuitous ARP when the link comes up, so LAN caches learn our MAC' })
  } else {
    sysctls.push({ path: `net/ipv6/conf/${link}/ndisc_notify`, value: '1', why: 'unsolicited neighbour advertisement when the link comes up' })
    sysctls.push({ path: `net/ipv6/conf/${link}/accept_ra`, value: '0', why: 'the macvlan takes no router advertisements: its routes are ours' })
  }
  if (host && family === 4) {
    // Otherwise the kernel gives the macvlan a link-local address and puts fe80::/64 dev macvlan0 into the host's
    // IPv6 main table: host routing promises to leave the main tables alone.
    sysctls.push({ path: `net/ipv6/conf/${link}/disable_ipv6`, value: '1', why: 'no IPv6 link-local route in the host\'s main table', optional: true })
  }
  if (relaysInKernel(config)) {
    if (family === 4) {
      // IPv4 forwarding is decided per input interface (IN_DEV_FORWARD): no need to turn the whole host into a router.
      sysctls.push({ path: `net/ipv4/conf/${config.podInterface}/forwarding`, value: '1', why: 'forward what clients send on the pod interface' })
      sysctls.push({ path: `net/ipv4/conf/${link}/forwarding`, value: '1', why: 'forward the replies coming back on the macvlan' })
    } else {
      sysctls.push({ path: 'net/ipv6/conf/all/forwarding', value: '1', why: 'IPv6 forwarding is only switched on for all interfaces' })
    }
  }
  if (host && family === 4) {
    sysctls.push({ path: `net/ipv4/conf/${link}/rp_filter`, value: '2', why: 'loose reverse-path check: replies arrive on the macvlan, the main table routes elsewhere' })
  }

  const routes: RoutePlan[] = []
  const rules: RulePlan[] = []
  const table = host ? ROUTE_TABLE : 'main' as const
  if (host) {
    if (config.source.prefixGiven) {
      routes.push({ family, table, dst: sourceNet, via: null, dev: link, src: source, why: 'the macvlan network, in our table only' })
    }
  }
  if (!gatewayOnLink) {
    routes.push({ family, table, dst: hostCidr(gateway), via: null, dev: link, src: source, why: 'the gateway is on the macvlan link' })
  }
  routes.push({ family, table, dst: null, via: gateway, dev: link, src: source, why: host ? 'default via the gateway, for EGRESS_SOURCE and marked connections' : 'default via the gateway on the macvlan' })
  if (host) {
    rules.push({ family, priority: RULE_PRIORITY_FROM, from: hostCidr(source), fwmark: null, table: ROUTE_TABLE, why: 'traffic from EGRESS_SOURCE (proxies bind to it) uses our table' })
    if (relaysInKernel(config)) {
      rules.push({ family, priority: RULE_PRIORITY_MARK, from: null, fwmark: FWMARK, table: ROUTE_TABLE, why: 'redirected connections (marked by the NAT rules) use our table' })
    }
  }

  return {
    family,
    link: {
      action: facts.macvlanExists ? 'adopt' : 'create',
      name: link,
      parent: facts.macvlanExists ? null : facts.parent,
      mode: config.macvlan.mode,
      mac: macFor(config, facts)
    },
    addresses: [{ link, cidr: { address: config.source.address, family, prefix: config.source.prefix }, noPrefixRoute: host }],
    routes,
    rules,
    sysctls,
    gateway
  }
}
