/**
 * The http-proxy ACL's decision cost against its size (10, 1,000, 10,000 rules), in process: the rules
 * are parsed from EGRESS_HTTP_PROXY_DESTINATION text like the daemon's, compiled once (compileAcl), and
 * decide() is timed on a fixed mix of targets — an exact host, a subdomain of a `*.domain` rule, an
 * address inside a CIDR rule, and a miss (denied by default, the worst case: every table is walked).
 */
import { parseHttpAcl } from '../src/config/http-acl.js'
import { compileAcl, type DecisionTarget } from '../src/proxy/acl.js'
import { median } from './report.js'

export interface AclCostRow {
  rules: number
  compileMs: number
  /** median ns per decide() of each kind of target */
  exactNs: number
  suffixNs: number
  cidrNs: number
  missNs: number
}

/** n rules: a third exact hosts, a third `*.domain`, a third IPv6 /48s in 2001:db8::/32, then `!` every tenth. */
export function aclText (n: number): string {
  const lines: string[] = []
  for (let i = 0; i < n; i++) {
    const deny = i % 10 === 9 ? '!' : ''
    switch (i % 3) {
      case 0: lines.push(`${deny}host${i}.svc${i % 97}.example.com`); break
      case 1: lines.push(`${deny}*.zone${i}.example.net`); break
      default: lines.push(`${deny}2001:db8:${(i % 65_536).toString(16)}::/48`)
    }
  }
  return lines.join('\n') + '\n'
}

function nsPerCall (fn: () => void): number {
  const batch = 1000
  const samples: number[] = []
  for (let i = 0; i < batch; i++) fn()
  const end = performance.now() + 300
  for (let s = 0; s < 50 && performance.now() < end; s++) {
    const t = performance.now()
    for (let i = 0; i < batch; i++) fn()
    samples.push((performance.now() - t) * 1e6 / batch)
  }
  return median(samples)
}

export function measureAcl (sizes: readonly number[]): AclCostRow[] {
  return sizes.map((n) => {
    const parsed = parseHttpAcl(aclText(n))
    if (!parsed.ok) throw new Error(`acl-cost: ${JSON.stringify(parsed.issues.slice(0, 2))}`)
    const t = performance.now()
    const acl = compileAcl(parsed.value)
    const compileMs = performance.now() - t
    // the last rules of each kind, so a linear scan would pay for the whole list
    const last = (k: number): number => { let i = n - 1; while (i >= 0 && i % 3 !== k) i--; return Math.max(i, 0) }
    const exact: DecisionTarget = { host: `host${last(0)}.svc${last(0) % 97}.example.com`, addresses: [{ address: '192.0.2.10', family: 4 }] }
    const suffix: DecisionTarget = { host: `api.eu.zone${last(1)}.example.net`, addresses: [{ address: '192.0.2.11', family: 4 }] }
    const cidr: DecisionTarget = { addresses: [{ address: `2001:db8:${(last(2) % 65_536).toString(16)}::7`, family: 6 }] }
    const miss: DecisionTarget = { host: 'nothing.invalid', addresses: [{ address: '2001:db8:ffff:ffff::1', family: 6 }] }
    return {
      rules: n,
      compileMs,
      exactNs: nsPerCall(() => { acl.decide(exact) }),
      suffixNs: nsPerCall(() => { acl.decide(suffix) }),
      cidrNs: nsPerCall(() => { acl.decide(cidr) }),
      missNs: nsPerCall(() => { acl.decide(miss) })
    }
  })
}
