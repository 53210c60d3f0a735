/**
 * Which connections the kernel relays (DNAT from the pod side, SNAT out through the macvlan): every
 * EGRESS_DESTINATION line in the redirect modes, and in dns-proxy mode every forward when
 * EGRESS_DNS_PROXY_FORWARDING=kernel. Pure; ruleset.ts, network.ts and the reload read it from here.
 *
 * A forward to a host name DNATs to the name's current addresses, as the daemon's resolver last answered
 * (`ResolvedNames`, kept by lifecycle/kernel-names.ts): those of EGRESS_SOURCE's family, in a canonical order
 * so that an answer that only reorders them rewrites nothing. With several, new connections take them in turn
 * (nft `numgen inc`), as the proxied forwarder's round robin does. A name with no usable address has no rule:
 * its port refuses connections (nothing listens there) until the name resolves.
 */
import { kernelForwards } from '../config/dns-forwards.js'
import type { Config, Family, FallbackRedirect, IpAddress, Protocol } from '../config/types.js'

/** Lower-case host name → the addresses its last answer held (any family, any order). */
export type ResolvedNames = ReadonlyMap<string, readonly IpAddress[]>

export const NO_NAMES: ResolvedNames = new Map()

export interface NatRule {
  readonly line: number
  readonly protocol: Protocol
  readonly port: number
  /** where new connections go, in turn; empty: no rule (a host name without a usable address) */
  readonly targets: readonly IpAddress[]
  readonly targetPort: number
  /** the host name the targets come from; null for an address target */
  readonly name: string | null
}

export interface KernelNat {
  /** the variable the rules come from, for the rules' comments */
  readonly variable: 'EGRESS_DESTINATION' | 'EGRESS_DNS_PROXY_DESTINATION'
  readonly rules: readonly NatRule[]
  readonly fallback: FallbackRedirect | null
}

function isRedirectMode (config: Pick<Config, 'mode'>): boolean {
  return config.mode === 'init' || config.mode === 'redirect' || config.mode === 'unit-test'
}

function compareAddresses (a: IpAddress, b: IpAddress): number {
  if (a.family !== b.family) return a.family - b.family
  return a.address < b.address ? -1 : a.address > b.address ? 1 : 0
}

/** The addresses of an answer a DNAT rule can use: EGRESS_SOURCE's family only, each once, sorted. */
export function usableTargets (addresses: readonly IpAddress[], family: Family): IpAddress[] {
  const seen = new Set<string>()
  const out: IpAddress[] = []
  for (const a of addresses) {
    if (a.family !== family || seen.has(a.address)) continue
    seen.add(a.address)
    out.push(a)
  }
  return out.sort(compareAddresses)
}

/** The DNAT rules of this configuration (host names at their addresses in `resolved`); null when it has none. */
export function kernelNat (config: Pick<Config, 'mode' | 'redirect' | 'dnsProxy' | 'source'>, resolved: ResolvedNames = NO_NAMES): KernelNat | null {
  if (isRedirectMode(config)) {
    if (config.redirect === null) return null
    const rules = config.redirect.rules.map((r): NatRule => ({ line: r.line, protocol: r.protocol, port: r.port, targets: [r.target], targetPort: r.targetPort, name: null }))
    return { variable: 'EGRESS_DESTINATION', rules, fallback: config.redirect.fallback }
  }
  const forwards = kernelForwards(config.dnsProxy)
  if (forwards.length === 0) return null
  const rules = forwards.map((f): NatRule => {
    const name = f.target.kind === 'name' ? f.target.name : null
    const targets = f.target.kind === 'ip' ? [f.target.address] : usableTargets(resolved.get(f.target.name) ?? [], config.source.family)
    return { line: f.line, protocol: 'tcp', port: f.port, targets, targetPort: f.targetPort, name }
  })
  return { variable: 'EGRESS_DNS_PROXY_DESTINATION', rules, fallback: null }
}

/**
 * The kernel forwards for clients: the network needs forwarding switched on (and, in host routing, the policy
 * rule for marked connections). True for the configuration as a whole, also while it has no DNAT rule yet
 * (kernel forwards whose names have not resolved): a resolution or reload that adds one keeps the network as set up.
 */
export function relaysInKernel (config: Pick<Config, 'mode' | 'dnsProxy'>): boolean {
  return config.mode === 'init' || config.mode === 'redirect' || (config.mode === 'dns-proxy' && config.dnsProxy?.forwarding === 'kernel')
}
