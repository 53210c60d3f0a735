/**
 * The Plan: the desired state as data, built purely from Config + host facts (plan.ts), printed by
 * `egress-router plan`, made true by apply/, kept true by reconcile.
 */
import type { Cidr, Family, IpAddress, MacvlanMode, Mode } from '../config/types.js'

/** What planning needs to know about the host; gathered by a thin adapter before buildPlan. */
export interface HostFacts {
  /** the parent NIC: EGRESS_INTERFACE or the link of the default route; null if there is none */
  readonly parent: string | null
  /** a link named EGRESS_MACVLAN_NAME exists already (a CNI plugin made it): adopt it */
  readonly macvlanExists: boolean
  /** the MAC a created link will get when EGRESS_MACVLAN_MAC=random (drawn by the adapter) */
  readonly randomMac?: string
  /** addresses of EGRESS_POD_INTERFACE (of the source's family): where listeners bind */
  readonly podAddresses: readonly IpAddress[]
}

/** `ip link add NAME link PARENT address MAC type macvlan mode MODE`, or adopt an existing NAME. */
export interface LinkPlan {
  readonly action: 'create' | 'adopt'
  readonly name: string
  /** null when adopting: the parent is whatever the existing link has */
  readonly parent: string | null
  readonly mode: MacvlanMode
  /** MAC for a created link; null when adopting (the link keeps its own) */
  readonly mac: string | null
}

/** `ip addr add ADDRESS/PREFIX dev LINK` */
export interface AddressPlan {
  readonly link: string
  readonly cidr: Cidr
  /**
   * IFA_F_NOPREFIXROUTE: in host routing the kernel must not add the prefix route to the main table
   * (it stays byte-for-byte the host's); the prefix route goes into our own table instead.
   */
  readonly noPrefixRoute: boolean
}

/** Routing table: 'main' (254) or a dedicated numeric table for host routing. */
export type Table = 'main' | number

/**
 * `ip route replace DST [via GW] dev LINK [src SRC] table T`; dst null = default route.
 * scope link when there is no gateway.
 */
export interface RoutePlan {
  readonly family: Family
  readonly table: Table
  readonly dst: Cidr | null
  readonly via: IpAddress | null
  readonly dev: string
  readonly src: IpAddress | null
  /** what this route is for, for humans and logs */
  readonly why: string
}

/** `ip rule add [from SRC] [fwmark MARK] lookup TABLE priority PRIO` */
export interface RulePlan {
  readonly family: Family
  readonly priority: number
  readonly from: Cidr | null
  readonly fwmark: number | null
  readonly table: number
  readonly why: string
}

/** a write under /proc/sys, e.g. `net/ipv4/ip_forward` = `1` */
export interface SysctlPlan {
  readonly path: string
  readonly value: string
  readonly why: string
  /** skipped when the kernel has no such file (an IPv6 setting on a kernel booted without IPv6) */
  readonly optional?: boolean
}

export interface NetworkPlan {
  readonly family: Family
  readonly link: LinkPlan
  readonly addresses: readonly AddressPlan[]
  readonly routes: readonly RoutePlan[]
  readonly rules: readonly RulePlan[]
  /** sysctls to set before the link goes up (arp_notify / ndisc_notify) and after (forwarding, rp_filter) */
  readonly sysctls: readonly SysctlPlan[]
  /** the neighbour to check for the L2 trap: the gateway on the macvlan */
  readonly gateway: IpAddress
}

export interface NftPlan {
  /** `ip` or `ip6` */
  readonly family: 'ip' | 'ip6'
  /** our own table; nothing else is ever touched */
  readonly table: string
  /** exactly what is piped to `nft -f -` */
  readonly script: string
}

export type ListenerPlan =
  | { readonly kind: 'http-proxy', readonly host: string, readonly port: number }
  | { readonly kind: 'dns-forward', readonly host: string, readonly port: number, readonly target: string, readonly targetPort: number, readonly line: number }
  | { readonly kind: 'health', readonly host: string, readonly port: number }

export interface Plan {
  readonly mode: Mode
  readonly network: NetworkPlan
  readonly nft: NftPlan
  readonly listeners: readonly ListenerPlan[]
  /**
   * The pod interface's addresses (EGRESS_SOURCE's family, no IPv6 link-local): where the proxies listen, never on
   * EGRESS_SOURCE. The listeners above are on these; a dns-proxy whose forwards are all in the kernel has none yet, and
   * opens its listeners here when a reload adds a host name.
   */
  readonly listenHosts: readonly string[]
  /** whether stopping removes what was created (host routing) or leaves it to the namespace's death (pod) */
  readonly cleanupOnStop: boolean
}
