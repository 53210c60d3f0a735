/**
 * The SIGTERM drain of redirect mode in host routing. Redirected connections are kernel NAT: nothing of them
 * passes through the daemon. In pod routing the rules simply stay when the daemon exits (the namespace dies
 * with the pod). In host routing the daemon removes its table, rules and macvlan at stop, which would cut every
 * redirected flow at once; so first:
 *   1. refuse NEW redirected connections (a reject rule at the head of our forward chain, matching our conntrack
 *      mark on a connection's first packet): clients get a TCP reset / ICMP port-unreachable at once, and the set
 *      of flows to wait for can only shrink;
 *   2. poll conntrack until no live flow carries our mark, or the drain timeout passes;
 * then the normal stop removes everything, and the flows still carrying our mark are deleted from conntrack, so a
 * flow cut at the deadline ends with a reset instead of hanging on a NAT binding to an address that is gone.
 */
import { readFileSync } from 'node:fs'
import type { Logger } from 'pino'
import { isLiveFlow, listMarkedFlows, type UdpTimeouts } from '../apply/conntrack.js'
import type { NftRunner } from '../nft/runner.js'
import { renderRule } from '../plan/nft-script.js'
import { FWMARK, type NftFamily, type Rule } from '../plan/ruleset.js'

const POLL_MS = 200
const DRAIN_COMMENT = 'draining: no new redirected connections'

/** Pure: the nft transaction that refuses new redirected connections (inserted first in filter_forward). */
export function refuseNewScript (family: NftFamily, table: string): string {
  const base = { effects: [], counter: true, comment: DRAIN_COMMENT } as const
  const tcp: Rule = { ...base, matches: [{ kind: 'ct-state', states: ['new'] }, { kind: 'ct-mark', mark: FWMARK }, { kind: 'l4proto', protocol: 'tcp' }], verdict: { kind: 'reject', with: 'tcp-reset' } }
  const other: Rule = { ...base, matches: [{ kind: 'ct-state', states: ['new'] }, { kind: 'ct-mark', mark: FWMARK }], verdict: { kind: 'reject', with: 'port-unreachable' } }
  // `insert` puts a rule first: the tcp one must end up in front, so it is inserted last.
  return [other, tcp].map((r) => `insert rule ${family} ${table} filter_forward ${renderRule(r, family)}`).join('\n') + '\n'
}

function udpTimeouts (): UdpTimeouts {
  const read = (name: string, fallback: number): number => {
    try {
      const n = Number(readFileSync(`/proc/sys/net/netfilter/${name}`, 'utf8').trim())
      return Number.isFinite(n) && n > 0 ? n : fallback
    } catch {
      return fallback
    }
  }
  return { unreplied: read('nf_conntrack_udp_timeout', 30), stream: read('nf_conntrack_udp_timeout_stream', 120) }
}

export interface RedirectDrainResult {
  /** live flows still carrying our mark when the drain ended (0: all finished) */
  readonly remaining: number
  /** false when conntrack could not be read: the drain did not wait */
  readonly observed: boolean
}

/**
 * Refuses new redirected connections and waits until none of ours is live, at most `timeoutMs`. Never throws:
 * a drain that cannot refuse or observe is logged, and the stop goes on.
 */
export async function drainRedirect (opts: { family: NftFamily, table: string, nft: NftRunner, logger: Logger, timeoutMs: number }): Promise<RedirectDrainResult> {
  const { logger } = opts
  const fam = opts.family === 'ip6' ? 6 : 4
  try {
    await opts.nft.apply(refuseNewScript(opts.family, opts.table))
  } catch (err) {
    logger.warn({ event: 'drain', err }, 'could not refuse new redirected connections; draining anyway')
  }
  const udp = udpTimeouts()
  const live = async (): Promise<number | null> => {
    const flows = await listMarkedFlows(fam, FWMARK)
    return flows === null ? null : flows.filter((f) => isLiveFlow(f, udp)).length
  }
  const deadline = performance.now() + opts.timeoutMs
  let n = await live()
  if (n === null) {
    logger.warn({ event: 'drain', what: 'redirect' }, 'conntrack (conntrack-tools) cannot list flows: not waiting for redirected connections')
    return { remaining: 0, observed: false }
  }
  if (n > 0) logger.info({ event: 'drain', what: 'redirect', flows: n, timeoutMs: opts.timeoutMs }, `waiting for ${n} redirected connection(s) to finish`)
  while (n !== null && n > 0 && performance.now() < deadline) {
    await new Promise((resolve) => setTimeout(resolve, Math.min(POLL_MS, Math.max(0, deadline - performance.now()))))
    n = await live()
  }
  const remaining = n ?? 0
  if (remaining > 0) logger.warn({ event: 'drain', what: 'redirect', flows: remaining }, `drain timeout: cutting ${remaining} redirected connection(s)`)
  else logger.info({ event: 'drain', what: 'redirect', flows: 0 }, 'redirected connections finished')
  return { remaining, observed: true }
}
