/**
 * buildPlan: Config + host facts → the whole desired state (pure). formatPlan prints it for a human; the
 * nft script in it is byte-for-byte what apply pipes to `nft -f -`.
 */
import { kernelForwards, proxiedForwards } from '../config/dns-forwards.js'
import type { Config } from '../config/types.js'
import { NO_NAMES, type ResolvedNames } from './kernel-nat.js'
import { nftPlan } from './nft-script.js'
import { planNetwork } from './network.js'
import type { HostFacts, ListenerPlan, Plan, RoutePlan, RulePlan } from './types.js'

function listenerHosts (facts: HostFacts): string[] {
  return facts.podAddresses.map((a) => a.address)
}

export function planListeners (config: Config, facts: HostFacts): ListenerPlan[] {
  const listeners: ListenerPlan[] = []
  // Proxies listen on the pod interface's addresses only: never on EGRESS_SOURCE.
  if (config.httpProxy !== null) {
    for (const host of listenerHosts(facts)) listeners.push({ kind: 'http-proxy', host, port: config.httpProxy.port })
  }
  // Forwards the kernel relays (EGRESS_DNS_PROXY_FORWARDING=kernel: all of them) are DNAT rules, not listeners.
  if (config.dnsProxy !== null) {
    for (const f of proxiedForwards(config.dnsProxy)) {
      const target = f.target.kind === 'ip' ? f.target.address.address : f.target.name
      for (const host of listenerHosts(facts)) {
        listeners.push({ kind: 'dns-forward', host, port: f.port, target, targetPort: f.targetPort, line: f.line })
      }
    }
  }
  if (config.health !== null) listeners.push({ kind: 'health', host: config.health.host, port: config.health.port })
  return listeners
}

/** `resolved`: the current addresses of kernel forwards' host names (none known yet by default). */
export function buildPlan (config: Config, facts: HostFacts, resolved: ResolvedNames = NO_NAMES): Plan {
  const network = planNetwork(config, facts)
  return {
    mode: config.mode,
    network,
    nft: nftPlan(config, { macvlan: network.link.name, resolved }),
    listeners: config.mode === 'init' ? [] : planListeners(config, facts),
    listenHosts: listenerHosts(facts),
    cleanupOnStop: config.routing === 'host'
  }
}

function hostPort (host: string, port: number): string {
  if (host === '') return `*:${port}`
  return host.includes(':') ? `[${host}]:${port}` : `${host}:${port}`
}

/** Equivalent `ip route` text, for humans. */
export function formatRoute (r: RoutePlan): string {
  const dst = r.dst === null ? 'default' : `${r.dst.address}/${r.dst.prefix}`
  const parts = [dst]
  if (r.via !== null) parts.push(`via ${r.via.address}`)
  parts.push(`dev ${r.dev}`)
  if (r.via === null) parts.push('scope link')
  if (r.src !== null) parts.push(`src ${r.src.address}`)
  if (r.table !== 'main') parts.push(`table ${r.table}`)
  return parts.join(' ')
}

/** Equivalent `ip rule` text, for humans. */
export function formatRule (r: RulePlan): string {
  const parts = [`priority ${r.priority}`]
  if (r.from !== null) parts.push(`from ${r.from.address}/${r.from.prefix}`)
  if (r.fwmark !== null) parts.push(`fwmark 0x${r.fwmark.toString(16)}`)
  parts.push(`lookup ${r.table}`)
  return parts.join(' ')
}

export function formatPlan (plan: Plan): string {
  const n = plan.network
  const out: string[] = []
  out.push(`mode: ${plan.mode}`)
  out.push('')
  out.push('link:')
  if (n.link.action === 'create') {
    out.push(`  create ${n.link.name} type macvlan mode ${n.link.mode} link ${n.link.parent ?? '?'} address ${n.link.mac ?? '?'}`)
  } else {
    out.push(`  adopt existing ${n.link.name} (made by someone else; never deleted by us)`)
  }
  out.push('addresses:')
  for (const a of n.addresses) out.push(`  ${a.cidr.address}/${a.cidr.prefix} dev ${a.link}${a.noPrefixRoute ? ' noprefixroute' : ''}`)
  out.push('routes:')
  for (const r of n.routes) out.push(`  ${formatRoute(r)}    # ${r.why}`)
  if (n.rules.length > 0) {
    out.push('rules:')
    for (const r of n.rules) out.push(`  ${formatRule(r)}    # ${r.why}`)
  }
  out.push('sysctls:')
  for (const s of n.sysctls) out.push(`  ${s.path.replaceAll('/', '.')} = ${s.value}    # ${s.why}`)
  out.push(`neighbour check: gateway ${n.gateway.address} on ${n.link.name}`)
  out.push('')
  out.push(`nftables (one transaction, \`nft -f -\`; table ${plan.nft.family} ${plan.nft.table}):`)
  out.push(plan.nft.script.trimEnd())
  out.push('')
  out.push('listeners:')
  if (plan.listeners.length === 0) out.push('  (none)')
  for (const l of plan.listeners) {
    if (l.kind === 'dns-forward') {
      out.push(`  dns-forward ${hostPort(l.host, l.port)} -> ${hostPort(l.target, l.targetPort)}    # line ${l.line}`)
    } else {
      out.push(`  ${l.kind} ${hostPort(l.host, l.port)}`)
    }
  }
  out.push(`on stop: ${plan.cleanupOnStop ? 'remove everything created (host routing)' : 'leave it to the pod namespace'}`)
  return out.join('\n') + '\n'
}

/**
 * The dns-proxy forwards the kernel relays (EGRESS_DNS_PROXY_FORWARDING=kernel), for `plan` to print after the
 * listeners: DNAT rules with no listener of their own. Those to addresses are in the nft script above; those to
 * host names are added once the running daemon has resolved them. '' when there are none.
 */
export function formatKernelForwards (config: Config): string {
  const forwards = kernelForwards(config.dnsProxy)
  if (forwards.length === 0) return ''
  const lines = forwards.map((f) => f.target.kind === 'ip'
    ? `  tcp ${f.port} -> ${hostPort(f.target.address.address, f.targetPort)}    # line ${f.line}`
    : `  tcp ${f.port} -> ${f.target.name}:${f.targetPort}    # line ${f.line}; DNAT to its addresses once resolved, rewritten as they change`)
  return ['kernel forwards (DNAT rules, EGRESS_DNS_PROXY_FORWARDING=kernel; no listener):', ...lines].join('\n') + '\n'
}
