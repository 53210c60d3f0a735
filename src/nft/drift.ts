/**
 * Drift detection: has someone changed our table since we applied it? The live table (`nft -j list table`) is
 * normalised into a TableShape — handles, counter values and other volatile numbers dropped, chains sorted by
 * name, rule order kept (it matters) — whose digest (the fingerprint) is stable across re-applies, restarts and
 * nft versions that order keys differently. Pure.
 *
 * The reconcile loop stores the listing and fingerprint read back right after an apply and compares each later
 * reading with it; describeDrift says in a few words what changed, for the log line before the re-apply.
 */
import { sha256 } from '@noble/hashes/sha2.js'
import type { NftListing } from './runner.js'

export interface RuleShape {
  /** canonical JSON of the rule's expressions and comment: equal rules have equal keys */
  readonly key: string
  /** short nft-like text for humans */
  readonly summary: string
}

export interface ChainShape {
  readonly name: string
  /** type/hook/prio/policy for a base chain, null for a regular chain */
  readonly base: { readonly type: string, readonly hook: string, readonly prio: number, readonly policy: string } | null
  readonly rules: readonly RuleShape[]
}

export interface TableShape {
  /** false: the table does not exist */
  readonly present: boolean
  readonly family: string | null
  readonly table: string | null
  /** sorted by name */
  readonly chains: readonly ChainShape[]
  /** sets, maps, named objects…: canonical JSON each, sorted (we make none, so any is drift) */
  readonly others: readonly string[]
  /** sha256 of everything above: the fingerprint */
  readonly digest: string
}

/** Keys whose values change without anyone changing the ruleset. */
const VOLATILE_KEYS = new Set(['handle', 'expires', 'index'])

/** Drops volatile fields; counter values become a bare `counter` so a counting rule still differs from one that does not count. */
function normalise (value: unknown): unknown {
  if (Array.isArray(value)) return value.map(normalise)
  if (typeof value !== 'object' || value === null) return value
  const out: Record<string, unknown> = {}
  for (const key of Object.keys(value).sort()) {
    if (VOLATILE_KEYS.has(key)) continue
    const v = (value as Record<string, unknown>)[key]
    if ((key === 'counter' || key === 'quota') && typeof v === 'object' && v !== null && !Array.isArray(v)) {
      out[key] = null
      continue
    }
    out[key] = normalise(v)
  }
  return out
}

/** JSON with sorted keys (normalise sorts them). */
function canonical (value: unknown): string {
  return JSON.stringify(normalise(value))
}

// ---- a short human summary of a rule's JSON expressions ---------------------------------------------------

function operand (v: unknown): string {
  if (typeof v === 'string') return v
  if (typeof v === 'number' || typeof v === 'boolean') return String(v)
  if (Array.isArray(v)) return v.map(operand).join(',')
  if (typeof v === 'object' && v !== null) {
    const [key, inner] = Object.entries(v)[0] ?? ['', null]
    const o = (inner ?? {}) as Record<string, unknown>
    switch (key) {
      case 'meta': return String(o.key)
      case 'payload': return `${String(o.protocol)} ${String(o.field)}`
      case 'ct': return `ct ${String(o.key)}`
      case 'fib': return `fib ${Array.isArray(o.flags) ? o.flags.join(' ') : ''} ${String(o.result)}`.replace(/ +/g, ' ')
      case 'set': return `{ ${(Array.isArray(inner) ? inner : [inner]).map(operand).join(', ')} }`
      case 'prefix': return `${String(o.addr)}/${String(o.len)}`
      case 'range': return Array.isArray(inner) ? inner.map(operand).join('-') : '?'
      case 'numgen': return `numgen ${String(o.mode)} mod ${String(o.mod)}`
      // `numgen inc mod 2 map { 0 : a, 1 : b }`: the elements are [key, value] pairs
      case 'map': return `${operand(o.key)} map ${operand(o.data)}`
    }
    return key
  }
  return '?'
}

function statement (e: unknown): string {
  if (typeof e !== 'object' || e === null) return '?'
  const [key, inner] = Object.entries(e)[0] ?? ['?', null]
  const o = (inner ?? {}) as Record<string, unknown>
  switch (key) {
    case 'match': {
      const left = operand(o.left)
      const right = (o.left as { meta?: { key?: string } } | undefined)?.meta?.key?.endsWith('ifname') === true
        ? JSON.stringify(o.right)
        : operand(o.right)
      return o.op === '==' || o.op === 'in' ? `${left} ${right}` : `${left} ${String(o.op)} ${right}`
    }
    case 'mangle': return `${operand(o.key)} set ${operand(o.value)}`
    case 'dnat':
    case 'snat': return `${key} to ${operand(o.addr ?? '')}${o.port === undefined ? '' : `:${String(o.port)}`}`
    case 'reject': return `reject${o.type === undefined ? '' : ` with ${String(o.type)}`}${o.expr === undefined ? '' : ` ${String(o.expr)}`}`
    case 'rule-text': return String(inner)
    case 'jump':
    case 'goto': return `${key} ${String(o.target)}`
    default: return key
  }
}

const SUMMARY_MAX = 140

function summarise (rule: Record<string, unknown>): string {
  const expr = Array.isArray(rule.expr) ? rule.expr.map(statement).join(' ') : ''
  const text = typeof rule.comment === 'string' ? `${expr} comment "${rule.comment}"` : expr
  return text.length <= SUMMARY_MAX ? text : `${text.slice(0, SUMMARY_MAX - 1)}…`
}

// ---- fingerprint ------------------------------------------------------------------------------------------

function digestOf (parts: unknown): string {
  return Buffer.from(sha256(Buffer.from(JSON.stringify(parts)))).toString('hex')
}

const ABSENT_DIGEST = digestOf({ present: false })

/** The normalised shape of `nft -j list table` output; null (no such table) gives the "absent" shape. */
export function tableShape (listing: NftListing | null): TableShape {
  if (listing === null) {
    return { present: false, family: null, table: null, chains: [], others: [], digest: ABSENT_DIGEST }
  }
  let family: string | null = null
  let table: string | null = null
  const chains = new Map<string, { base: ChainShape['base'], rules: RuleShape[] }>()
  const chainOf = (name: string): { base: ChainShape['base'], rules: RuleShape[] } => {
    let c = chains.get(name)
    if (c === undefined) {
      c = { base: null, rules: [] }
      chains.set(name, c)
    }
    return c
  }
  const others: string[] = []
  for (const item of listing.nftables) {
    const [kind, body] = Object.entries(item)[0] ?? ['', null]
    const o = (body ?? {}) as Record<string, unknown>
    if (kind === 'metainfo') continue
    if (kind === 'table') {
      family = String(o.family)
      table = String(o.name)
      others.push(...(o.comment === undefined ? [] : [canonical({ tableComment: o.comment })]))
    } else if (kind === 'chain') {
      const c = chainOf(String(o.name))
      if (o.hook !== undefined) {
        c.base = { type: String(o.type), hook: String(o.hook), prio: Number(o.prio), policy: String(o.policy ?? 'accept') }
      }
    } else if (kind === 'rule') {
      const { family: _f, table: _t, chain: _c, ...rest } = o
      chainOf(String(o.chain)).rules.push({ key: canonical(rest), summary: summarise(o) })
    } else {
      others.push(canonical(item))
    }
  }
  others.sort()
  const sorted: ChainShape[] = [...chains.entries()]
    .sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0))
    .map(([name, c]) => ({ name, base: c.base, rules: c.rules }))
  const digest = digestOf({ present: true, family, table, chains: sorted.map(c => ({ name: c.name, base: c.base, rules: c.rules.map(r => r.key) })), others })
  return { present: true, family, table, chains: sorted, others, digest }
}

/**
 * A stable hex digest of the table: equal for two listings exactly when they hold the same chains and rules
 * (ignoring handles and counter values). A missing table (null) has a fingerprint of its own.
 */
export function fingerprint (listing: NftListing | null): string {
  return tableShape(listing).digest
}

// ---- what changed -----------------------------------------------------------------------------------------

const MAX_ITEMS = 5

function describeBase (b: ChainShape['base']): string {
  return b === null ? 'regular chain' : `type ${b.type} hook ${b.hook} priority ${b.prio} policy ${b.policy}`
}

/** Multiset difference by key, keeping the order of `a`. */
function minus (a: readonly RuleShape[], b: readonly RuleShape[]): RuleShape[] {
  const left = new Map<string, number>()
  for (const r of b) left.set(r.key, (left.get(r.key) ?? 0) + 1)
  const out: RuleShape[] = []
  for (const r of a) {
    const n = left.get(r.key) ?? 0
    if (n > 0) left.set(r.key, n - 1)
    else out.push(r)
  }
  return out
}

/**
 * A short human description of how the `actual` listing differs from the `expected` one (both as
 * `nft -j list table` printed them, null = no table), e.g.
 * `chain filter_input: rule removed: iifname "macvlan0" counter drop comment "…"`; null when they are the same.
 */
export function describeDrift (expectedListing: NftListing | null, actualListing: NftListing | null): string | null {
  return describeShapeDrift(tableShape(expectedListing), tableShape(actualListing))
}

/** describeDrift on shapes already computed. */
export function describeShapeDrift (expected: TableShape, actual: TableShape): string | null {
  if (expected.digest === actual.digest) return null
  const name = (f: TableShape): string => (f.family === null ? 'table' : `table ${f.family} ${f.table ?? '?'}`)
  if (!actual.present) return `${name(expected)} is missing`
  if (!expected.present) return `${name(actual)} exists but should not`

  const items: string[] = []
  const actualChains = new Map(actual.chains.map(c => [c.name, c]))
  const expectedChains = new Map(expected.chains.map(c => [c.name, c]))
  for (const e of expected.chains) {
    const a = actualChains.get(e.name)
    if (a === undefined) {
      items.push(`chain ${e.name} is missing`)
      continue
    }
    if (describeBase(e.base) !== describeBase(a.base)) {
      items.push(`chain ${e.name} changed from ${describeBase(e.base)} to ${describeBase(a.base)}`)
    }
    const removed = minus(e.rules, a.rules)
    const added = minus(a.rules, e.rules)
    for (const r of removed) items.push(`chain ${e.name}: rule removed: ${r.summary}`)
    for (const r of added) items.push(`chain ${e.name}: rule added: ${r.summary}`)
    if (removed.length === 0 && added.length === 0 && e.rules.map(r => r.key).join('\n') !== a.rules.map(r => r.key).join('\n')) {
      items.push(`chain ${e.name}: rules reordered`)
    }
  }
  for (const a of actual.chains) {
    if (!expectedChains.has(a.name)) items.push(`chain ${a.name} was added (${a.rules.length} rules)`)
  }
  const othersRemoved = expected.others.filter(o => !actual.others.includes(o)).length
  const othersAdded = actual.others.filter(o => !expected.others.includes(o)).length
  if (othersRemoved + othersAdded > 0) items.push(`sets/objects changed (${othersRemoved} removed, ${othersAdded} added)`)
  if (expected.family !== actual.family || expected.table !== actual.table) {
    items.push(`${name(expected)} read back as ${name(actual)}`)
  }
  if (items.length === 0) return 'the table changed'
  const shown = items.slice(0, MAX_ITEMS)
  if (items.length > MAX_ITEMS) shown.push(`and ${items.length - MAX_ITEMS} more`)
  return shown.join('; ')
}
