/**
 * Which connections the kernel relays (DNAT from the pod side, SNAT out through the macvlan): every
 * EGRESS_DESTINATION line in the redirect modes, and in dns-proxy mode the forwards to IP addresses when
 * EGRESS_DNS_PROXY_FORWARDING=kernel. Pure; ruleset.ts, network.ts and the reload read it from here.
 */
import { kernelForwards } from '../config/dns-forwards.js'
import type { Config, RedirectConfig } from '../config/types.js'

export interface KernelNat {
  /** the variable the rules come from, for the rules' comments */
  readonly variable: 'EGRESS_DESTINATION' | 'EGRESS_DNS_PROXY_DESTINATION'
  readonly redirect: RedirectConfig
}

function isRedirectMode (config: Pick<Config, 'mode'>): boolean {
  return config.mode === 'init' || config.mode === 'redirect' || config.mode === 'unit-test'
}

/** The DNAT rules of this configuration; null when it has none. */
export function kernelNat (config: Pick<Config, 'mode' | 'redirect' | 'dnsProxy'>): KernelNat | null {
  if (isRedirectMode(config)) return config.redirect === null ? null : { variable: 'EGRESS_DESTINATION', redirect: config.redirect }
  const forwards = kernelForwards(config.dnsProxy)
  return forwards.rules.length === 0 ? null : { variable: 'EGRESS_DNS_PROXY_DESTINATION', redirect: forwards }
}

/**
 * The kernel forwards for clients: the network needs forwarding switched on (and, in host routing, the policy
 * rule for marked connections). True for the configuration as a whole, also while it has no DNAT rule yet
 * (kernel forwarding whose forwards are all host names): a reload that adds one keeps the network as set up.
 */
export function relaysInKernel (config: Pick<Config, 'mode' | 'dnsProxy'>): boolean {
  return config.mode === 'init' || config.mode === 'redirect' || (config.mode === 'dns-proxy' && config.dnsProxy?.forwarding === 'kernel')
}
