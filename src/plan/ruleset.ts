/**
 * The nftables ruleset as data: which chains exist, which rules they hold, in which order. Pure; built from the
 * Config alone. nft-script.ts is the only place that turns it into nft text.
 *
 * What the rules do (one table, `ip` or `ip6` after the family of EGRESS_SOURCE):
 *
 * - redirect modes (init / redirect): connections arriving on EGRESS_POD_INTERFACE for an address of the router
 *   itself are DNATed per EGRESS_DESTINATION line; the fallback line takes every other port and protocol.
 *   dns-proxy forwards under EGRESS_DNS_PROXY_FORWARDING=kernel get the same DNAT rules, as tcp lines without a
 *   fallback (kernel-nat.ts), and none of the pod-side refusal below. A forward to a host name DNATs to the name's
 *   current addresses (several: in turn, `numgen inc`), and has no rule while it has none.
 *   Only traffic addressed to the router (`fib daddr type local`) is redirected, so traffic merely routed
 *   through the pod interface (host routing) is left alone.
 *   The health port (EGRESS_HEALTH_ADDRESS) is exempt from the fallback so probes reach the router itself —
 *   a deliberate difference from the OpenShift image, which redirected the probe port too.
 *   Without a fallback, other connections from the pod interface to the router are refused (tcp reset,
 *   icmp port-unreachable) instead of reaching whatever listens there; the health port stays open and ping
 *   (echo-request) is answered, so "is the router up" can still be asked. In host routing the router shares
 *   the host's addresses and services (sshd, kubelet, ...), so the refusal is left to the host's own firewall:
 *   rejecting there could lock the operator out of the node.
 * - every mode: what leaves through the macvlan is SNATed to EGRESS_SOURCE (only there — the old router SNATed
 *   everything, which broke traffic to the node); proxies bind to EGRESS_SOURCE anyway, so for them it is a
 *   safety net.
 * - every mode: NEW connections from the LAN side (arriving on the macvlan, input and forward) are dropped;
 *   replies pass. For IPv6, neighbour discovery, MLD queries and ICMPv6 errors pass or nothing works.
 * - host routing: redirected connections get a conntrack mark in the DNAT rule; a filter chain after dstnat
 *   copies it to the packet mark for every packet of the connection in the original direction, and the policy
 *   rule `fwmark FWMARK lookup ROUTE_TABLE` (network.ts) sends it out through the gateway.
 *   Replies are not marked: they must follow the main table back to the client.
 */
import type { Config, IpAddress, Protocol } from '../config/types.js'
import { kernelNat, type ResolvedNames } from './kernel-nat.js'
import { FWMARK, NFT_TABLE, ROUTE_TABLE } from './marks.js'

export { FWMARK, ROUTE_TABLE }

/** the name of our only table, in either family */
export const TABLE = NFT_TABLE
/** on the table and every chain: how `cleanup` and humans recognise what is ours */
export const OWNER_COMMENT = 'managed by egress-router'

export type NftFamily = 'ip' | 'ip6'

/** ICMPv6 types that must reach the router from the LAN: neighbour discovery, MLD, and errors (PMTU). */
export const ICMPV6_ESSENTIAL: readonly string[] = [
  'destination-unreachable', 'packet-too-big', 'time-exceeded', 'parameter-problem',
  'mld-listener-query', 'nd-router-advert', 'nd-neighbor-solicit', 'nd-neighbor-advert'
]

export type Match =
  /** `iifname "NAME"` */
  | { readonly kind: 'iifname', readonly name: string }
  /** `oifname "NAME"` */
  | { readonly kind: 'oifname', readonly name: string }
  /** `fib daddr type local`: addressed to the router itself */
  | { readonly kind: 'local-destination' }
  /** `meta l4proto tcp` */
  | { readonly kind: 'l4proto', readonly protocol: Protocol }
  /** `tcp dport 80` */
  | { readonly kind: 'dport', readonly protocol: Protocol, readonly port: number }
  /** `ct state established,related` */
  | { readonly kind: 'ct-state', readonly states: readonly ('established' | 'related' | 'new' | 'invalid')[] }
  /** `ct direction original` */
  | { readonly kind: 'ct-direction', readonly direction: 'original' | 'reply' }
  /** `ct mark 0x...` */
  | { readonly kind: 'ct-mark', readonly mark: number }
  /** `ct status dnat`: the connection was redirected by our DNAT */
  | { readonly kind: 'ct-status-dnat' }
  /** `oifname != "NAME"` */
  | { readonly kind: 'not-oifname', readonly name: string }
  /** `icmp type { ... }` / `icmpv6 type { ... }` */
  | { readonly kind: 'icmp-type', readonly protocol: 'icmp' | 'icmpv6', readonly types: readonly string[] }

/** Statements that do not end the rule. */
export type Effect =
  /** `ct mark set 0x...` */
  | { readonly kind: 'set-ct-mark', readonly mark: number }
  /** `meta mark set ct mark` */
  | { readonly kind: 'copy-ct-mark' }

export type Verdict =
  | { readonly kind: 'accept' }
  | { readonly kind: 'drop' }
  /** `reject with tcp reset` (needs an l4proto tcp match) or `reject with icmp(v6) port-unreachable` */
  | { readonly kind: 'reject', readonly with: 'tcp-reset' | 'port-unreachable' }
  /** `dnat to ADDR[:PORT]`; port null keeps the original port */
  | { readonly kind: 'dnat', readonly to: IpAddress, readonly port: number | null }
  /** `dnat to numgen inc mod N map { 0 : ADDR, ... } :PORT`: new connections take the addresses in turn */
  | { readonly kind: 'dnat-spread', readonly to: readonly IpAddress[], readonly port: number }
  /** `snat to ADDR` */
  | { readonly kind: 'snat', readonly to: IpAddress }

export interface Rule {
  readonly matches: readonly Match[]
  readonly effects: readonly Effect[]
  /** count what the rule hits (`nft list table` shows it; drift ignores the numbers) */
  readonly counter: boolean
  /** null: fall through to the next rule after the effects */
  readonly verdict: Verdict | null
  readonly comment: string
}

export type ChainName = 'nat_prerouting' | 'mark_prerouting' | 'filter_input' | 'filter_forward' | 'nat_postrouting'

/** Every chain buildRuleset can make, so a re-apply removes chains an earlier configuration made. */
export const ALL_CHAINS: readonly ChainName[] = ['nat_prerouting', 'mark_prerouting', 'filter_input', 'filter_forward', 'nat_postrouting']

export interface Chain {
  readonly name: ChainName
  readonly type: 'nat' | 'filter'
  readonly hook: 'prerouting' | 'input' | 'forward' | 'postrouting'
  /** a standard priority name plus an offset: `dstnat + 10` */
  readonly priority: { readonly base: 'dstnat' | 'filter' | 'srcnat', readonly offset: number }
  readonly rules: readonly Rule[]
}

export interface Ruleset {
  readonly family: NftFamily
  readonly table: string
  readonly comment: string
  readonly chains: readonly Chain[]
  /** chains of ALL_CHAINS this configuration does not use: deleted in the same transaction if present */
  readonly unusedChains: readonly ChainName[]
}

function rule (matches: Match[], verdict: Verdict | null, comment: string, opts: { effects?: Effect[], counter?: boolean } = {}): Rule {
  return { matches, effects: opts.effects ?? [], counter: opts.counter ?? false, verdict, comment }
}

/** The `ip`/`ip6` family of our table: the family of EGRESS_SOURCE. */
export function nftFamily (config: Config): NftFamily {
  return config.source.family === 6 ? 'ip6' : 'ip'
}

export interface RulesetOptions {
  readonly macvlan: string
  /** the current addresses of kernel forwards' host names (default: none known yet) */
  readonly resolved?: ResolvedNames
}

export function buildRuleset (config: Config, opts: RulesetOptions): Ruleset {
  const family = nftFamily(config)
  const icmp = family === 'ip6' ? 'icmpv6' as const : 'icmp' as const
  const lan = opts.macvlan
  const pod = config.podInterface
  const host = config.routing === 'host'
  const nat = kernelNat(config, opts.resolved)
  // the redirect modes' own rules; dns-proxy forwards in the kernel have DNAT rules, not these
  const redirect = nat?.variable === 'EGRESS_DESTINATION' ? config.redirect : null
  const health = config.health

  const chains: Chain[] = []

  // ---- DNAT what the pod side sends to the router (redirect modes; dns-proxy forwards in the kernel) ---------
  if (nat !== null) {
    const toRouter: Match[] = [{ kind: 'iifname', name: pod }, { kind: 'local-destination' }]
    const mark: Effect[] = host ? [{ kind: 'set-ct-mark', mark: FWMARK }] : []
    const rules: Rule[] = nat.rules.filter(r => r.targets.length > 0).map(r => rule(
      [...toRouter, { kind: 'dport', protocol: r.protocol, port: r.port }],
      r.targets.length === 1
        ? { kind: 'dnat', to: r.targets[0] as IpAddress, port: r.targetPort }
        : { kind: 'dnat-spread', to: r.targets, port: r.targetPort },
      `${nat.variable} line ${r.line}: ${r.port} ${r.protocol}`,
      { effects: mark, counter: true }))
    if (redirect !== null && redirect.fallback !== null) {
      if (health !== null) {
        rules.push(rule([...toRouter, { kind: 'dport', protocol: 'tcp', port: health.port }], { kind: 'accept' },
          'health probes reach the router itself'))
      }
      rules.push(rule(toRouter, { kind: 'dnat', to: redirect.fallback.target, port: null },
        `EGRESS_DESTINATION line ${redirect.fallback.line}: fallback`, { effects: mark, counter: true }))
    }
    chains.push({ name: 'nat_prerouting', type: 'nat', hook: 'prerouting', priority: { base: 'dstnat', offset: 0 }, rules })

    if (host) {
      // After dstnat (the DNAT rule set the ct mark on the first packet) and before the routing decision.
      chains.push({
        name: 'mark_prerouting',
        type: 'filter',
        hook: 'prerouting',
        priority: { base: 'dstnat', offset: 10 },
        rules: [rule([{ kind: 'ct-direction', direction: 'original' }, { kind: 'ct-mark', mark: FWMARK }], null,
          `redirected connections use routing table ${ROUTE_TABLE}`, { effects: [{ kind: 'copy-ct-mark' }] })]
      })
    }
  }

  // ---- input: the LAN may not open connections; the pod side may only reach what is redirected ------------
  const established: Match = { kind: 'ct-state', states: ['established', 'related'] }
  const input: Rule[] = [rule([{ kind: 'iifname', name: lan }, established], { kind: 'accept' }, 'replies from the LAN')]
  if (family === 'ip6') {
    input.push(rule([{ kind: 'iifname', name: lan }, { kind: 'icmp-type', protocol: 'icmpv6', types: ICMPV6_ESSENTIAL }],
      { kind: 'accept' }, 'neighbour discovery, MLD and ICMPv6 errors'))
  }
  input.push(rule([{ kind: 'iifname', name: lan }], { kind: 'drop' }, 'no new connections from the LAN', { counter: true }))

  if (redirect !== null && redirect.fallback === null && !host) {
    input.push(rule([{ kind: 'iifname', name: pod }, established], { kind: 'accept' }, 'replies on the pod side'))
    if (health !== null) {
      input.push(rule([{ kind: 'iifname', name: pod }, { kind: 'dport', protocol: 'tcp', port: health.port }], { kind: 'accept' },
        'health probes reach the router itself'))
    }
    const echo = family === 'ip6' ? [...ICMPV6_ESSENTIAL, 'echo-request'] : ['echo-request']
    input.push(rule([{ kind: 'iifname', name: pod }, { kind: 'icmp-type', protocol: icmp, types: echo }], { kind: 'accept' },
      family === 'ip6' ? 'ping, neighbour discovery, MLD and ICMPv6 errors' : 'ping'))
    input.push(rule([{ kind: 'iifname', name: pod }, { kind: 'l4proto', protocol: 'tcp' }], { kind: 'reject', with: 'tcp-reset' },
      'no rule for this port', { counter: true }))
    input.push(rule([{ kind: 'iifname', name: pod }], { kind: 'reject', with: 'port-unreachable' }, 'no rule for this port', { counter: true }))
  }
  chains.push({ name: 'filter_input', type: 'filter', hook: 'input', priority: { base: 'filter', offset: 0 }, rules: input })

  // ---- forward: nothing from the LAN is routed onwards unless it is a reply --------------------------------
  chains.push({
    name: 'filter_forward',
    type: 'filter',
    hook: 'forward',
    priority: { base: 'filter', offset: 0 },
    rules: [
      rule([{ kind: 'iifname', name: lan }, established], { kind: 'accept' }, 'replies from the LAN'),
      rule([{ kind: 'iifname', name: lan }], { kind: 'drop' }, 'no new connections from the LAN', { counter: true }),
      // Fail closed: a redirected connection leaves from EGRESS_SOURCE or not at all. Without this, a missing
      // macvlan or route (before setup, or while someone deletes it) would send clients' traffic out another
      // link with their own source address.
      ...(nat === null
        ? []
        : [rule([{ kind: 'ct-direction', direction: 'original' }, { kind: 'ct-status-dnat' }, { kind: 'not-oifname', name: lan }],
            { kind: 'drop' }, 'redirected traffic leaves only through the macvlan', { counter: true })])
    ]
  })

  // ---- SNAT: only what leaves through the macvlan ----------------------------------------------------------
  chains.push({
    name: 'nat_postrouting',
    type: 'nat',
    hook: 'postrouting',
    priority: { base: 'srcnat', offset: 0 },
    rules: [rule([{ kind: 'oifname', name: lan }], { kind: 'snat', to: { address: config.source.address, family: config.source.family } },
      'leave the LAN side from EGRESS_SOURCE', { counter: true })]
  })

  const used = new Set(chains.map(c => c.name))
  return {
    family,
    table: TABLE,
    comment: OWNER_COMMENT,
    chains,
    unusedChains: ALL_CHAINS.filter(name => !used.has(name))
  }
}
