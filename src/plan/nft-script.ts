/**
 * The only nft text builder. Renders a Ruleset as one `nft -f -` transaction in the knftables shape:
 *
 *   add table …     (creates it if missing, so the flush below cannot fail)
 *   flush table …   (empties every chain of OUR table only; other tables are never named)
 *   add chain …     (base chains; re-adding an existing chain with the same spec is a no-op)
 *   add chain … / delete chain …   (chains an earlier configuration made and this one does not use)
 *   add rule …
 *
 * Applied twice it leaves the kernel in the same state; if any line fails nothing changes.
 */
import type { Config } from '../config/types.js'
import type { NftPlan } from './types.js'
import { buildRuleset, type Chain, type Effect, type Match, type Rule, type Ruleset, type RulesetOptions, type Verdict } from './ruleset.js'

/**
 * nft strings have no escapes: a name or comment with a quote, backslash or control character would change
 * the meaning of the script. Config validation keeps such names out; this is the last line of defence.
 */
function quote (text: string): string {
  if (/["\\\x00-\x1f\x7f]/.test(text)) throw new Error(`cannot quote ${JSON.stringify(text)} for nft`)
  return `"${text}"`
}

function hex (mark: number): string {
  return `0x${mark.toString(16).padStart(8, '0')}`
}

function address (a: { address: string, family: 4 | 6 }, port: number | null): string {
  if (port === null) return a.address
  return a.family === 6 ? `[${a.address}]:${port}` : `${a.address}:${port}`
}

function renderMatch (m: Match): string {
  switch (m.kind) {
    case 'iifname': return `iifname ${quote(m.name)}`
    case 'oifname': return `oifname ${quote(m.name)}`
    case 'local-destination': return 'fib daddr type local'
    case 'l4proto': return `meta l4proto ${m.protocol}`
    case 'dport': return `${m.protocol} dport ${m.port}`
    case 'ct-state': return `ct state ${m.states.join(',')}`
    case 'ct-direction': return `ct direction ${m.direction}`
    case 'ct-mark': return `ct mark ${hex(m.mark)}`
    case 'ct-status-dnat': return 'ct status dnat'
    case 'not-oifname': return `oifname != ${quote(m.name)}`
    case 'icmp-type': return m.types.length === 1
      ? `${m.protocol} type ${m.types[0]}`
      : `${m.protocol} type { ${m.types.join(', ')} }`
  }
}

function renderEffect (e: Effect): string {
  switch (e.kind) {
    case 'set-ct-mark': return `ct mark set ${hex(e.mark)}`
    case 'copy-ct-mark': return 'meta mark set ct mark'
  }
}

function renderVerdict (v: Verdict, family: Ruleset['family']): string {
  switch (v.kind) {
    case 'accept': return 'accept'
    case 'drop': return 'drop'
    case 'reject': return v.with === 'tcp-reset'
      ? 'reject with tcp reset'
      : `reject with ${family === 'ip6' ? 'icmpv6' : 'icmp'} port-unreachable`
    case 'dnat': return `dnat to ${address(v.to, v.port)}`
    // the map's addresses are bare (no brackets for IPv6); the port follows the map
    case 'dnat-spread': return `dnat to numgen inc mod ${v.to.length} map { ${v.to.map((a, i) => `${i} : ${a.address}`).join(', ')} } : ${v.port}`
    case 'snat': return `snat to ${address(v.to, null)}`
  }
}

/** The rule body as `nft list` would show it (without counters' numbers): matches, effects, counter, verdict, comment. */
export function renderRule (r: Rule, family: Ruleset['family']): string {
  const parts = [
    ...r.matches.map(renderMatch),
    ...r.effects.map(renderEffect),
    ...(r.counter ? ['counter'] : []),
    ...(r.verdict === null ? [] : [renderVerdict(r.verdict, family)]),
    ...(r.comment === '' ? [] : [`comment ${quote(r.comment)}`])
  ]
  return parts.join(' ')
}

function renderPriority (p: Chain['priority']): string {
  if (p.offset === 0) return p.base
  return p.offset > 0 ? `${p.base} + ${p.offset}` : `${p.base} - ${-p.offset}`
}

/** The whole ruleset as one transaction for `nft -f -`; ends with a newline. */
export function renderNftScript (ruleset: Ruleset): string {
  const t = `${ruleset.family} ${ruleset.table}`
  const comment = quote(ruleset.comment)
  const lines: string[] = [
    `add table ${t} { comment ${comment}; }`,
    `flush table ${t}`
  ]
  for (const c of ruleset.chains) {
    lines.push(`add chain ${t} ${c.name} { type ${c.type} hook ${c.hook} priority ${renderPriority(c.priority)}; policy accept; comment ${comment}; }`)
  }
  for (const name of ruleset.unusedChains) {
    // add first so the delete cannot fail when the chain is not there (nft 1.0.6 has no `destroy`)
    lines.push(`add chain ${t} ${name}`, `delete chain ${t} ${name}`)
  }
  for (const c of ruleset.chains) {
    for (const r of c.rules) lines.push(`add rule ${t} ${c.name} ${renderRule(r, ruleset.family)}`)
  }
  return lines.join('\n') + '\n'
}

/** The nft part of the Plan: family `ip` for an IPv4 EGRESS_SOURCE, `ip6` for IPv6; our one table. */
export function nftPlan (config: Config, opts: RulesetOptions): NftPlan {
  const ruleset = buildRuleset(config, opts)
  return { family: ruleset.family, table: ruleset.table, script: renderNftScript(ruleset) }
}
