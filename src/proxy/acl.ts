/**
 * The http-proxy destination ACL (EGRESS_HTTP_PROXY_DESTINATION), compiled once per configuration.
 *
 * Two kinds of rule look at two different things:
 *  - name rules (`host.example.com`, `*.example.com`) look at the host name the client asked for;
 *    they never match a request made by IP literal (no reverse DNS);
 *  - address rules (`192.0.2.7`, `192.0.2.0/24`, `2001:db8::/32`) look at every address the
 *    destination resolves to (or the literal the client asked for).
 *  `*` is both.
 *
 * Decision, precisely:
 *  1. Within each kind, first match wins: the matching rule with the lowest index (line order).
 *  2. A deny in either kind denies: `!*.ads.example.com` denies the name whatever it resolves to,
 *     and an allowed `api.example.com` that resolves into `!10.0.0.0/8` is denied, whichever of the
 *     two lines comes first. An address exception is written as an address rule above the range
 *     (`10.1.2.3` before `!10.0.0.0/8`).
 *  3. Otherwise an address is allowed when its name or the address itself is allowed.
 *  4. Address rules apply to every resolved address: if any of them is denied, the request is
 *     denied (a name that points into a denied range is not trusted for its other addresses either).
 *     Addresses matched by nothing are simply not used; the connection goes to the first allowed
 *     one, so only an address that was checked is ever connected to — the proxy never looks up
 *     the name a second time.
 *  5. Nothing allowed: denied by default.
 * IPv4-mapped IPv6 is IPv4 (canonicalised before it gets here). An IPv6 address that carries an
 * IPv4 address for a translator (NAT64, 6to4, SIIT, IPv4-compatible) is also checked against the
 * IPv4 rules: a deny there denies it.
 */
import type { AclRule, Cidr, IpAddress } from '../config/types.js'
import { DnsError } from '../errors.js'
import { canonicalIp, canonicalIpBytes, embeddedIpv4Bytes, formatIpBytes, ipBytes, normaliseHostName, type TargetHost } from './target.js'

/** The daemon's own resolver (src/dns/resolver.ts); throws DnsError (ENOTFOUND, ESERVFAIL, ETIMEOUT, ENONAMESERVER). */
export interface NameResolver {
  resolve (name: string): Promise<{ addresses: readonly IpAddress[] }>
}

export type RuleRef = { readonly line: number, readonly text: string } | 'default'

export interface AclDecision {
  readonly action: 'allow' | 'deny'
  readonly rule: RuleRef
  /** allow: the address to connect to; deny: the address that was denied (null when the name was) */
  readonly address: IpAddress | null
  /** allow: every allowed address, in resolver order (address is the first) */
  readonly candidates: readonly IpAddress[]
}

export interface DecisionTarget {
  /** the normalised name when the request was made by name */
  readonly host?: string
  readonly addresses: readonly IpAddress[]
}

export interface CompiledAcl {
  decide (target: DecisionTarget): AclDecision
  /** The verdict that needs no lookup: the name is denied, or nothing could allow it. null = resolve and decide. */
  checkName (name: string): AclDecision | null
}

const NONE = Number.POSITIVE_INFINITY

// ---- address prefixes: a binary trie per family; each node keeps the lowest rule index ending there

interface BitNode { zero?: BitNode, one?: BitNode, index: number }

const bit = (bytes: Uint8Array, i: number): number => ((bytes[i >> 3] ?? 0) >> (7 - (i & 7))) & 1

/** A set of prefixes answering "lowest index of a prefix containing this address" in O(address bits). */
export class PrefixTable {
  readonly #roots: Record<4 | 6, BitNode> = { 4: { index: NONE }, 6: { index: NONE } }

  add (cidr: Cidr, index: number): void {
    const bytes = ipBytes(cidr)
    let node = this.#roots[cidr.family]
    for (let i = 0; i < cidr.prefix; i++) {
      const key = bit(bytes, i) === 0 ? 'zero' : 'one'
      node = node[key] ??= { index: NONE }
    }
    node.index = Math.min(node.index, index)
  }

  /** Lowest index of a prefix containing the address; Infinity when none does. */
  lookup (address: IpAddress): number {
    return this.lookupBytes(ipBytes(address))
  }

  /** lookup on an address's bytes: 4 of them for IPv4, 16 for IPv6. */
  lookupBytes (bytes: Uint8Array): number {
    let node: BitNode | undefined = this.#roots[bytes.length === 4 ? 4 : 6]
    let best = NONE
    for (let i = 0; node !== undefined; i++) {
      best = Math.min(best, node.index)
      if (i === bytes.length * 8) break
      node = bit(bytes, i) === 0 ? node.zero : node.one
    }
    return best
  }
}

/**
 * A rule written in IPv4-mapped IPv6 (`::ffff:10.0.0.0/104`) is an IPv4 rule. Ranges shorter than
 * /96 that contain the mapped block (`::/0`) stay IPv6-only: `!::/0` means "no IPv6".
 */
function canonicalCidr (cidr: Cidr): Cidr {
  const address = canonicalIp(cidr)
  if (address === null) throw new TypeError(`ACL rule has an invalid address '${cidr.address}'`)
  if (cidr.family === 6 && address.family === 4 && cidr.prefix >= 96) return { ...address, prefix: cidr.prefix - 96 }
  return { ...cidr, address: address.family === 6 ? address.address : cidr.address }
}

// ---- names: exact names in a Map, `*.domain` suffixes in a label trie --------------------------

interface LabelNode { children: Map<string, LabelNode>, index: number }

class SuffixTable {
  readonly #root: LabelNode = { children: new Map(), index: NONE }

  add (domain: string, index: number): void {
    let node = this.#root
    for (const label of domain.split('.').reverse()) {
      let next = node.children.get(label)
      if (next === undefined) { next = { children: new Map(), index: NONE }; node.children.set(label, next) }
      node = next
    }
    node.index = Math.min(node.index, index)
  }

  /** Lowest index of a domain equal to the name or a parent of it. */
  lookup (name: string): number {
    let node: LabelNode | undefined = this.#root
    let best = NONE
    const labels = name.split('.')
    for (let i = labels.length - 1; i >= 0 && node !== undefined; i--) {
      node = node.children.get(labels[i] ?? '')
      if (node !== undefined) best = Math.min(best, node.index)
    }
    return best
  }
}

// ---- the compiled ACL -------------------------------------------------------------------------

export function compileAcl (rules: readonly AclRule[]): CompiledAcl {
  const exact = new Map<string, number>()
  const suffixes = new SuffixTable()
  const prefixes = new PrefixTable()
  let anyIndex = NONE
  let anyAddressAllow = false

  rules.forEach((rule, index) => {
    const m = rule.match
    switch (m.kind) {
      case 'host': {
        const name = normaliseHostName(m.name)
        if (!exact.has(name)) exact.set(name, index)
        break
      }
      case 'domain': suffixes.add(normaliseHostName(m.domain), index); break
      case 'cidr': prefixes.add(canonicalCidr(m.cidr), index); break
      case 'any': anyIndex = Math.min(anyIndex, index); break
    }
    if ((m.kind === 'cidr' || m.kind === 'any') && rule.action === 'allow') anyAddressAllow = true
  })

  const ruleAt = (index: number): AclRule | undefined => Number.isFinite(index) ? rules[index] : undefined
  const ref = (rule: AclRule): RuleRef => ({ line: rule.line, text: rule.text })

  const nameIndex = (name: string): number =>
    Math.min(exact.get(name) ?? NONE, suffixes.lookup(name), anyIndex)

  const ownAddressIndex = (bytes: Uint8Array): number => Math.min(prefixes.lookupBytes(bytes), anyIndex)

  /** First match for one address (its canonical bytes); a translator-embedded IPv4 address can only add a deny. */
  const addressIndex = (bytes: Uint8Array): number => {
    const own = ownAddressIndex(bytes)
    const inner = embeddedIpv4Bytes(bytes)
    if (inner !== null && ruleAt(own)?.action !== 'deny') {
      const innerIndex = ownAddressIndex(inner)
      if (ruleAt(innerIndex)?.action === 'deny') return innerIndex
    }
    return own
  }

  const deny = (rule: RuleRef, address: IpAddress | null): AclDecision => ({ action: 'deny', rule, address, candidates: [] })

  return {
    checkName (rawName) {
      const n = ruleAt(nameIndex(normaliseHostName(rawName)))
      if (n?.action === 'deny') return deny(ref(n), null)
      if (n === undefined && !anyAddressAllow) return deny('default', null)
      return null
    },

    decide (target) {
      const ni = target.host === undefined ? NONE : nameIndex(normaliseHostName(target.host))
      const n = ruleAt(ni)
      if (n?.action === 'deny') return deny(ref(n), null)
      const candidates: IpAddress[] = []
      let allowedBy: AclRule | undefined
      for (const raw of target.addresses) {
        // parsed once: the prefix lookups and the embedded-IPv4 check read the bytes, the text is made when kept
        const bytes = canonicalIpBytes(raw.address)
        if (bytes === null) continue
        const ai = addressIndex(bytes)
        const a = ruleAt(ai)
        if (a?.action === 'deny') return deny(ref(a), formatIpBytes(bytes))
        // Allowed by whichever allowing rule comes first in the file (n and a are allows or absent).
        const rule = ruleAt(Math.min(ni, ai))
        if (rule === undefined) continue
        const address = formatIpBytes(bytes)
        if (!candidates.some(c => c.address === address.address)) candidates.push(address)
        allowedBy ??= rule
      }
      const first = candidates[0]
      if (first === undefined || allowedBy === undefined) return deny('default', target.addresses[0] ?? null)
      return { action: 'allow', rule: ref(allowedBy), address: first, candidates }
    }
  }
}

/** Client networks allowed to use the proxy (EGRESS_HTTP_PROXY_CLIENTS); null = everyone. */
export function compileClientFilter (cidrs: readonly Cidr[] | null): (address: IpAddress) => boolean {
  if (cidrs === null) return () => true
  const table = new PrefixTable()
  for (const c of cidrs) table.add(canonicalCidr(c), 0)
  return address => {
    const canonical = canonicalIp(address)
    return canonical !== null && Number.isFinite(table.lookup(canonical))
  }
}

// ---- admission: resolve once, decide, pick the address to connect to -------------------------

export type Admission =
  | { readonly kind: 'allow', readonly decision: AclDecision, readonly address: IpAddress }
  | { readonly kind: 'deny', readonly decision: AclDecision }
  /** the name did not resolve (DnsError code, or 'ENODATA' for an answer without addresses) */
  | { readonly kind: 'unresolved', readonly code: string, readonly error: unknown }
  /** allowed, but no allowed address is of the source address's family (cannot be connected from it) */
  | { readonly kind: 'no-route', readonly decision: AclDecision }

/**
 * Resolves a host (when it is a name) once and decides. The returned address is one the ACL
 * checked; callers connect to it and nothing else.
 */
export async function admit (acl: CompiledAcl, resolver: NameResolver, host: TargetHost, family: 4 | 6): Promise<Admission> {
  let decision: AclDecision
  if (host.kind === 'ip') {
    return admitAddress(acl, host.address, family)
  } else {
    const early = acl.checkName(host.name)
    if (early !== null) return { kind: 'deny', decision: early }
    let addresses: readonly IpAddress[]
    try {
      addresses = (await resolver.resolve(host.name)).addresses
    } catch (error) {
      const code = error instanceof DnsError ? error.code : 'ERESOLVER'
      return { kind: 'unresolved', code, error }
    }
    if (addresses.length === 0) return { kind: 'unresolved', code: 'ENODATA', error: null }
    decision = acl.decide({ host: host.name, addresses })
  }
  return admission(decision, family)
}

/**
 * The verdict for a request made by IP literal: no lookup, so no promise. Depends only on the ACL,
 * the address and the family, which is what lets a caller keep it for as long as the ACL lives.
 */
export function admitAddress (acl: CompiledAcl, address: IpAddress, family: 4 | 6): Admission {
  return admission(acl.decide({ addresses: [address] }), family)
}

function admission (decision: AclDecision, family: 4 | 6): Admission {
  if (decision.action === 'deny') return { kind: 'deny', decision }
  const address = decision.candidates.find(c => c.family === family)
  return address === undefined ? { kind: 'no-route', decision } : { kind: 'allow', decision, address }
}

/** The one-line reason a 403 carries. */
export function describeDenial (decision: AclDecision): string {
  if (decision.rule === 'default') {
    return decision.address === null
      ? 'denied: no rule allows this destination (default deny)'
      : `denied: no rule allows ${decision.address.address} (default deny)`
  }
  const where = decision.address === null ? '' : ` (resolved address ${decision.address.address})`
  return `denied by rule line ${decision.rule.line} '${decision.rule.text}'${where}`
}
