/**
 * Reading a DNS answer section: follow the CNAME chain that starts at the question's name and take
 * the address records at its end. Only records on that chain count — anything else a server adds
 * for other names is ignored (RFC 5452 §9: do not cache out-of-bailiwick extras). Pure.
 */
import type { Answer } from 'dns-packet'
import type { IpAddress } from '../config/types.js'
import type { QueryType } from './transport.js'
import { ipLiteral } from './ip.js'

/** A chain longer than this inside one answer is treated as a loop. */
export const MAX_CHAIN = 16

export interface ChainResult {
  /** address records found at the end of the chain, in the server's order */
  readonly addresses: readonly IpAddress[]
  /** the smallest TTL along the chain and the address records (seconds); Infinity when none */
  readonly ttlSec: number
  /** the name the chain ends at (the question's name when there was no CNAME) */
  readonly end: string
  /** a CNAME pointed back into the chain */
  readonly loop: boolean
}

function key (name: string): string {
  const lower = name.toLowerCase()
  return lower.endsWith('.') ? lower.slice(0, -1) : lower
}

export function followChain (qname: string, type: QueryType, answers: readonly Answer[]): ChainResult {
  let current = key(qname)
  let ttlSec = Number.POSITIVE_INFINITY
  const seen = new Set<string>([current])
  for (let hop = 0; hop <= MAX_CHAIN; hop++) {
    const addresses: IpAddress[] = []
    let addressTtl = Number.POSITIVE_INFINITY
    let cname: string | null = null
    for (const rr of answers) {
      if (key(rr.name) !== current || ('class' in rr && rr.class !== undefined && rr.class !== 'IN')) continue
      if (rr.type === type && typeof rr.data === 'string') {
        const ip = ipLiteral(rr.data)
        if (ip !== null && ip.family === (type === 'A' ? 4 : 6) && !addresses.some(a => a.address === ip.address)) {
          addresses.push(ip)
          addressTtl = Math.min(addressTtl, rr.ttl ?? 0)
        }
      } else if (rr.type === 'CNAME' && typeof rr.data === 'string' && cname === null) {
        cname = key(rr.data)
        ttlSec = Math.min(ttlSec, rr.ttl ?? 0)
      }
    }
    if (addresses.length > 0) return { addresses, ttlSec: Math.min(ttlSec, addressTtl), end: current, loop: false }
    if (cname === null) return { addresses: [], ttlSec, end: current, loop: false }
    if (seen.has(cname)) return { addresses: [], ttlSec, end: cname, loop: true }
    seen.add(cname)
    current = cname
  }
  return { addresses: [], ttlSec, end: current, loop: true }
}

/**
 * How long a negative answer may be cached (RFC 2308 §5): the smaller of the SOA record's TTL and
 * its MINIMUM field, from the authority section; 0 (then clamped up to minTtl) when there is none.
 */
export function negativeTtlSec (authorities: readonly Answer[]): number {
  for (const rr of authorities) {
    if (rr.type === 'SOA') return Math.min(rr.ttl ?? 0, rr.data.minimum ?? 0)
  }
  return 0
}
