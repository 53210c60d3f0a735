/**
 * The daemon's own DNS client, shared by the http-proxy (every CONNECT / request host) and the
 * dns-proxy (every forward target): A and AAAA asked in parallel over src/dns/transport.ts, answers
 * cached per name by the rules of src/dns/cache.ts, kept fresh in the background so that a
 * connection waits on DNS only the first time a name is seen.
 *
 * When a lookup waits:
 * - a name never seen, or whose last answer expired without anyone keeping it fresh, waits for
 *   the network; concurrent lookups of one name share that one query (single-flight);
 * - a fresh answer, a stale one while its name is failing or held (see cache.ts), a cached
 *   NXDOMAIN, or a cached failure until its retry time: answered at once, no query.
 * Who keeps a name fresh: every `watch()`ed name, and every name that was looked up since its last
 * query — so a name in use at least once per TTL is re-asked before it expires and never waits.
 * Names nobody uses are left to expire and are swept; at most `maxEntries` names are kept
 * (least recently used, unwatched ones go first), because the http proxy sees any host a client
 * asks for.
 *
 * Search list: a name that is not absolute is tried with the search domains as glibc does; a
 * NXDOMAIN/NODATA moves on to the next candidate, but a transient failure ends the search with
 * that failure (glibc goes on), so that an outage of one server never makes a name silently
 * resolve to a different candidate's address.
 *
 * One family failing while the other answers (say AAAA times out, A answers): the answer is used,
 * keeping the failed family's addresses from the previous good set, for minTtl only, so the
 * failed family is asked again soon instead of being forgotten for a whole TTL.
 */
import type { IpAddress } from '../config/types.js'
import { DnsError } from '../errors.js'
import { followChain, negativeTtlSec } from './answer.js'
import {
  applyOutcome, cachePolicy, EMPTY_ENTRY, isEvictable, isHeld, nextLookupAt, viewEntry,
  type CacheEntry, type CachePolicy, type Outcome, type TtlLimits, type View
} from './cache.js'
import { ipLiteral, sameAddresses } from './ip.js'
import { nameProblem, searchCandidates } from './names.js'
import { parseResolvConf, RESOLV_DEFAULTS, type Nameserver } from './resolv-conf.js'
import { Transport, type Logger, type QueryType } from './transport.js'

export type { Logger } from './transport.js'

export interface ResolverOptions {
  nameservers: Nameserver[]
  search?: string[]
  ndots?: number
  timeoutMs?: number
  attempts?: number
  rotate?: boolean
  minTtlMs: number
  maxTtlMs: number
  maxStaleMs: number
  /** injected clock (ms); Date.now by default */
  now?: () => number
  logger?: Logger
  /** names kept at most (default 10000) */
  maxEntries?: number
  /** fine-tuning of the cache rules (hold, backoff, refresh point); defaults from the three limits */
  policy?: Partial<CachePolicy>
  /** [0,1) source for backoff jitter; Math.random by default */
  random?: () => number
  /** 16-bit query ID source; crypto-random by default */
  randomId?: () => number
}

export interface Resolution {
  /** A records first, then AAAA, each in the server's order; empty only in watch() notifications of a name that is gone */
  addresses: readonly IpAddress[]
  expiresAt: number
  stale: boolean
  source: 'cache' | 'network'
}

export interface ResolverStats {
  /** DNS messages sent */
  queries: number
  /** answers accepted from servers */
  answers: number
  /** lookups that ended in a transient failure (SERVFAIL, REFUSED, timeout) */
  failures: number
  cacheEntries: number
  /** names whose answer is being served past its TTL */
  staleEntries: number
}

/** The resolver's per-name bookkeeping around the pure cache entry. */
interface Slot {
  readonly key: string
  entry: CacheEntry
  readonly watchers: Set<(r: Resolution) => void>
  inflight: Promise<void> | null
  timer: NodeJS.Timeout | null
  /** looked up by someone since the last query: keep it fresh */
  used: boolean
  /** what watchers were last told */
  told: { addresses: readonly IpAddress[], stale: boolean } | null
}

const MAX_CHASE = 8
const SWEEP_MS = 60_000
const MAX_TIMER_MS = 2 ** 31 - 1

export class Resolver {
  private readonly transport: Transport
  private readonly search: readonly string[]
  private readonly ndots: number
  private readonly policy: CachePolicy
  private readonly now: () => number
  private readonly random: () => number
  private readonly logger: Logger | undefined
  private readonly maxEntries: number
  private readonly slots = new Map<string, Slot>()
  private readonly sweeper: NodeJS.Timeout
  private failureCount = 0
  private closed = false

  constructor (opts: ResolverOptions) {
    this.transport = new Transport({
      nameservers: opts.nameservers,
      timeoutMs: opts.timeoutMs ?? RESOLV_DEFAULTS.timeoutMs,
      attempts: opts.attempts ?? RESOLV_DEFAULTS.attempts,
      rotate: opts.rotate ?? false,
      logger: opts.logger,
      randomId: opts.randomId
    })
    this.search = (opts.search ?? []).map(d => d.toLowerCase().replace(/\.$/, '')).filter(d => d !== '')
    this.ndots = opts.ndots ?? RESOLV_DEFAULTS.ndots
    this.policy = cachePolicy({ minTtlMs: opts.minTtlMs, maxTtlMs: opts.maxTtlMs, maxStaleMs: opts.maxStaleMs }, opts.policy)
    this.now = opts.now ?? Date.now
    this.random = opts.random ?? Math.random
    this.logger = opts.logger
    this.maxEntries = opts.maxEntries ?? 10_000
    this.sweeper = setInterval(() => this.sweep(), SWEEP_MS)
    this.sweeper.unref()
  }

  /** A resolver for the nameservers, search list and options of /etc/resolv.conf text. */
  static fromResolvConf (text: string, ttl: TtlLimits, logger?: Logger): Resolver {
    const conf = parseResolvConf(text)
    for (const line of conf.skipped) logger?.warn({ line }, 'resolv.conf line skipped')
    if (conf.defaulted) logger?.warn({ nameserver: '127.0.0.1' }, 'resolv.conf names no nameserver; using 127.0.0.1 as glibc does')
    return new Resolver({
      nameservers: [...conf.nameservers],
      search: [...conf.search],
      ndots: conf.ndots,
      timeoutMs: conf.timeoutMs,
      attempts: conf.attempts,
      rotate: conf.rotate,
      ...ttl,
      ...(logger === undefined ? {} : { logger })
    })
  }

  /**
   * The addresses of `name`. IP literals (`192.0.2.1`, `[2001:db8::1]`) come back as themselves.
   * Throws DnsError: ENOTFOUND (NXDOMAIN, or neither A nor AAAA), ESERVFAIL, ETIMEOUT,
   * ENONAMESERVER, EBADNAME (not a host name), ECANCELLED (closed).
   */
  async resolve (name: string): Promise<Resolution> {
    const literal = ipLiteral(name)
    if (literal !== null) return { addresses: [literal], expiresAt: Number.POSITIVE_INFINITY, stale: false, source: 'cache' }
    if (this.closed) throw new DnsError('ECANCELLED', name, 'resolver closed')
    const problem = nameProblem(name)
    if (problem !== null) throw new DnsError('EBADNAME', name, problem)
    const slot = this.slot(name.toLowerCase())
    slot.used = true
    const now = this.now()
    const view = viewEntry(slot.entry, now, this.policy)
    const waitless = view.kind === 'fresh' || view.kind === 'negative' || view.kind === 'error' ||
      (view.kind === 'stale' && (slot.entry.failures > 0 || isHeld(slot.entry) || slot.inflight !== null))
    if (waitless) {
      if (now >= nextLookupAt(slot.entry)) void this.lookup(slot)
      else if (slot.timer === null && slot.inflight === null) this.schedule(slot)
      return this.answer(name, view, 'cache')
    }
    await this.lookup(slot)
    if (this.closed) throw new DnsError('ECANCELLED', name, 'resolver closed')
    return this.answer(name, viewEntry(slot.entry, this.now(), this.policy), 'network')
  }

  /**
   * Keeps `name` fresh in the background and calls `onChange` whenever its address set or its
   * staleness changes — with an empty address list once the name is confirmed gone (NXDOMAIN or
   * NODATA past the hold) or its last good answer is older than maxStale. The first call comes
   * after the first answer (at once, if one is cached). Returns the unsubscribe function.
   */
  watch (name: string, onChange: (r: Resolution) => void): () => void {
    const literal = ipLiteral(name)
    if (literal !== null) {
      queueMicrotask(() => onChange({ addresses: [literal], expiresAt: Number.POSITIVE_INFINITY, stale: false, source: 'cache' }))
      return () => {}
    }
    const problem = nameProblem(name)
    if (problem !== null) throw new DnsError('EBADNAME', name, problem)
    if (this.closed) throw new DnsError('ECANCELLED', name, 'resolver closed')
    const slot = this.slot(name.toLowerCase())
    slot.watchers.add(onChange)
    const current = this.current(slot)
    if (current !== null) {
      // The new watcher hears the current state at once; the others were told already, or will be
      // on the next change, so `told` moves only when nobody was told anything yet.
      queueMicrotask(() => { if (slot.watchers.has(onChange)) onChange({ ...current, source: 'cache' }) })
      slot.told ??= { addresses: current.addresses, stale: current.stale }
    }
    if (slot.inflight === null) {
      if (this.now() >= nextLookupAt(slot.entry)) void this.lookup(slot)
      else this.schedule(slot)
    }
    return () => {
      slot.watchers.delete(onChange)
    }
  }

  /** The cached answer for `name`, if a usable one exists; never queries. */
  peek (name: string): Resolution | undefined {
    const literal = ipLiteral(name)
    if (literal !== null) return { addresses: [literal], expiresAt: Number.POSITIVE_INFINITY, stale: false, source: 'cache' }
    const slot = this.slots.get(name.toLowerCase())
    if (slot === undefined) return undefined
    const view = viewEntry(slot.entry, this.now(), this.policy)
    if (view.kind !== 'fresh' && view.kind !== 'stale') return undefined
    return { addresses: view.good.addresses, expiresAt: view.good.expiresAt, stale: view.kind === 'stale', source: 'cache' }
  }

  stats (): ResolverStats {
    const now = this.now()
    let staleEntries = 0
    for (const slot of this.slots.values()) {
      if (viewEntry(slot.entry, now, this.policy).kind === 'stale') staleEntries++
    }
    return {
      queries: this.transport.stats.queries,
      answers: this.transport.stats.answers,
      failures: this.failureCount,
      cacheEntries: this.slots.size,
      staleEntries
    }
  }

  /** Stops every timer and socket; lookups in flight reject with ECANCELLED. Idempotent. */
  close (): void {
    if (this.closed) return
    this.closed = true
    clearInterval(this.sweeper)
    for (const slot of this.slots.values()) {
      if (slot.timer !== null) clearTimeout(slot.timer)
      slot.timer = null
      slot.watchers.clear()
    }
    this.transport.close()
  }

  // ---- internals ---------------------------------------------------------------------------

  private slot (key: string): Slot {
    let slot = this.slots.get(key)
    if (slot !== undefined) {
      // Map order is the LRU order: move to the end on every use.
      this.slots.delete(key)
      this.slots.set(key, slot)
      return slot
    }
    slot = { key, entry: EMPTY_ENTRY, watchers: new Set(), inflight: null, timer: null, used: false, told: null }
    this.slots.set(key, slot)
    if (this.slots.size > this.maxEntries) this.sweep()
    return slot
  }

  private answer (name: string, view: View, source: 'cache' | 'network'): Resolution {
    switch (view.kind) {
      case 'fresh':
      case 'stale':
        return { addresses: view.good.addresses, expiresAt: view.good.expiresAt, stale: view.kind === 'stale', source }
      case 'negative':
        throw new DnsError('ENOTFOUND', name, view.negative.reason === 'NXDOMAIN' ? 'no such name (NXDOMAIN)' : 'no A or AAAA records')
      case 'error':
        throw new DnsError(view.error.code, name, view.error.message.replace(/^[^:]*: /, ''), { cause: view.error })
      case 'miss':
        // Only reachable when a lookup was cancelled or its outcome already aged out.
        throw new DnsError('ETIMEOUT', name, 'no answer')
    }
  }

  /** What a watcher should currently believe, or null when nothing is known yet. */
  private current (slot: Slot): { addresses: readonly IpAddress[], expiresAt: number, stale: boolean } | null {
    const view = viewEntry(slot.entry, this.now(), this.policy)
    switch (view.kind) {
      case 'fresh':
      case 'stale':
        return { addresses: view.good.addresses, expiresAt: view.good.expiresAt, stale: view.kind === 'stale' }
      case 'negative':
        return { addresses: [], expiresAt: view.negative.expiresAt, stale: false }
      default:
        // A failure: watchers that had addresses learn they are gone only once maxStale dropped them.
        return slot.told !== null && slot.told.addresses.length > 0 ? { addresses: [], expiresAt: this.now(), stale: true } : null
    }
  }

  /** One network lookup for the slot; concurrent callers share it. Never rejects. */
  private lookup (slot: Slot): Promise<void> {
    if (slot.inflight !== null) return slot.inflight
    if (slot.timer !== null) { clearTimeout(slot.timer); slot.timer = null }
    slot.used = false
    const run = async (): Promise<void> => {
      const outcome = await this.lookupName(slot.key, slot.entry)
      if (this.closed) return
      const before = slot.entry
      const now = this.now()
      slot.entry = applyOutcome(before, outcome, now, this.policy, this.random)
      this.report(slot, before, outcome, now)
      this.notify(slot)
    }
    const promise = run().catch(error => {
      this.logger?.warn({ host: slot.key, err: error }, 'dns lookup crashed')
    }).finally(() => {
      slot.inflight = null
      if (!this.closed) this.schedule(slot)
    })
    slot.inflight = promise
    return promise
  }

  /** Logs each transition once: stale serving starts, a hold starts or ends, recovery. */
  private report (slot: Slot, before: CacheEntry, outcome: Outcome, now: number): void {
    const name = slot.key
    const after = slot.entry
    if (outcome.kind === 'failure') {
      this.failureCount++
      if (before.failures === 0) {
        const view = viewEntry(after, now, this.policy)
        const serving = view.kind === 'fresh' || view.kind === 'stale' ? view.good.addresses.map(a => a.address) : []
        this.logger?.warn({ host: name, code: outcome.error.code, err: outcome.error.message, serving, stale: view.kind === 'stale', retryInMs: (after.retryAt ?? now) - now },
          serving.length > 0 ? 'dns lookup failed; serving the last good answer' : 'dns lookup failed')
      } else if (before.good !== null && after.good === null) {
        this.logger?.warn({ host: name, code: outcome.error.code }, 'dns last good answer dropped: older than maxStale')
      } else {
        this.logger?.debug({ host: name, code: outcome.error.code, failures: after.failures }, 'dns lookup failed again')
      }
      return
    }
    if (before.failures > 0) this.logger?.info({ host: name, failures: before.failures }, 'dns lookup recovered')
    if (outcome.kind === 'negative' && isHeld(after)) {
      this.logger?.warn({ host: name, reason: outcome.reason, seen: after.negativeStreak, serving: after.good?.addresses.map(a => a.address) },
        'dns name answered negatively; keeping the last good answer until confirmed')
    } else if (outcome.kind === 'negative' && before.good !== null) {
      this.logger?.warn({ host: name, reason: outcome.reason }, 'dns name confirmed gone; dropping its addresses')
    } else if (outcome.kind === 'answer' && isHeld(before)) {
      this.logger?.info({ host: name }, 'dns negative answers ended; name resolves again')
    }
  }

  private notify (slot: Slot): void {
    if (slot.watchers.size === 0) return
    const current = this.current(slot)
    if (current === null) return
    const told = slot.told
    if (told !== null && told.stale === current.stale && sameAddresses(told.addresses, current.addresses)) return
    slot.told = { addresses: current.addresses, stale: current.stale }
    const resolution: Resolution = { ...current, source: 'network' }
    for (const watcher of [...slot.watchers]) {
      try {
        watcher(resolution)
      } catch (error) {
        this.logger?.warn({ host: slot.key, err: error }, 'dns watcher threw')
      }
    }
  }

  /** Arms the slot's timer for its next lookup, if anyone keeps it fresh. */
  private schedule (slot: Slot): void {
    if (slot.timer !== null) { clearTimeout(slot.timer); slot.timer = null }
    if (this.closed || (slot.watchers.size === 0 && !slot.used)) return
    const delay = Math.min(MAX_TIMER_MS, Math.max(0, nextLookupAt(slot.entry) - this.now()))
    slot.timer = setTimeout(() => {
      slot.timer = null
      if (slot.watchers.size > 0 || slot.used) void this.lookup(slot)
    }, delay)
    slot.timer.unref()
  }

  /** Drops names nothing uses any more, then the least recently used beyond maxEntries. */
  private sweep (): void {
    const now = this.now()
    const idle = (slot: Slot): boolean => slot.watchers.size === 0 && slot.inflight === null
    const drop = (slot: Slot): void => {
      if (slot.timer !== null) clearTimeout(slot.timer)
      this.slots.delete(slot.key)
    }
    for (const slot of [...this.slots.values()]) {
      if (idle(slot) && isEvictable(slot.entry, now, this.policy)) drop(slot)
    }
    for (const slot of [...this.slots.values()]) {
      if (this.slots.size <= this.maxEntries) break
      if (idle(slot)) drop(slot)
    }
  }

  /** The search list applied: candidates in order until one answers (see the file comment). */
  private async lookupName (key: string, previous: CacheEntry): Promise<Outcome> {
    const candidates = searchCandidates(key, this.search, this.ndots)
    let nxdomainOnly = true
    let ttlSec = Number.POSITIVE_INFINITY
    for (const candidate of candidates) {
      const outcome = await this.lookupCandidate(candidate, previous)
      if (outcome.kind !== 'negative') return outcome
      if (outcome.reason === 'NODATA') nxdomainOnly = false
      ttlSec = Math.min(ttlSec, outcome.ttlSec)
    }
    return { kind: 'negative', reason: nxdomainOnly ? 'NXDOMAIN' : 'NODATA', ttlSec }
  }

  /** A and AAAA in parallel for one fully-qualified name, combined. */
  private async lookupCandidate (name: string, previous: CacheEntry): Promise<Outcome> {
    const [a, aaaa] = await Promise.all([this.chase(name, 'A'), this.chase(name, 'AAAA')])
    const withAddresses = [a, aaaa].filter(o => o.kind === 'answer' && o.addresses.length > 0)
    if (withAddresses.length > 0) {
      const addresses: IpAddress[] = []
      let ttlSec = Number.POSITIVE_INFINITY
      for (const [outcome, family] of [[a, 4], [aaaa, 6]] as const) {
        if (outcome.kind === 'answer') {
          addresses.push(...outcome.addresses)
          if (outcome.addresses.length > 0) ttlSec = Math.min(ttlSec, outcome.ttlSec)
        } else if (outcome.kind === 'failure') {
          // Partial: keep what we knew for the failed family, and ask again after minTtl.
          addresses.push(...(previous.good?.addresses.filter(ip => ip.family === family) ?? []))
          ttlSec = 0
          this.logger?.debug({ name, family, code: outcome.error.code }, 'dns one address family failed; using the other')
        }
      }
      return { kind: 'answer', addresses: [...addresses.filter(ip => ip.family === 4), ...addresses.filter(ip => ip.family === 6)], ttlSec }
    }
    const failure = [a, aaaa].find(o => o.kind === 'failure')
    if (failure !== undefined) {
      const servfail = [a, aaaa].find(o => o.kind === 'failure' && o.error.code === 'ESERVFAIL')
      return servfail ?? failure
    }
    const negatives = [a, aaaa].filter(o => o.kind === 'negative' || o.kind === 'answer')
    const reason = negatives.every(o => o.kind === 'negative' && o.reason === 'NXDOMAIN') ? 'NXDOMAIN' : 'NODATA'
    return { kind: 'negative', reason, ttlSec: Math.min(...negatives.map(o => o.ttlSec)) }
  }

  /** One type for one name: the answer's CNAME chain followed, and chased by new queries (bounded) when it ends without addresses. */
  private async chase (name: string, type: QueryType): Promise<Outcome> {
    let qname = name
    let ttlSec = Number.POSITIVE_INFINITY
    const visited = new Set<string>([qname])
    for (let hop = 0; hop <= MAX_CHASE; hop++) {
      let answer
      try {
        answer = await this.transport.query(qname, type)
      } catch (error) {
        return { kind: 'failure', error: error instanceof DnsError ? error : new DnsError('ESERVFAIL', name, String(error), { cause: error }) }
      }
      const chain = followChain(qname, type, answer.answers)
      ttlSec = Math.min(ttlSec, chain.ttlSec)
      if (chain.addresses.length > 0) return { kind: 'answer', addresses: chain.addresses, ttlSec }
      if (answer.rcode === 'NXDOMAIN') return { kind: 'negative', reason: 'NXDOMAIN', ttlSec: Math.min(ttlSec, negativeTtlSec(answer.authorities)) }
      if (chain.loop) return { kind: 'failure', error: new DnsError('ESERVFAIL', name, `CNAME loop at ${chain.end}`) }
      if (chain.end === qname.toLowerCase().replace(/\.$/, '')) {
        return { kind: 'negative', reason: 'NODATA', ttlSec: Math.min(ttlSec, negativeTtlSec(answer.authorities)) }
      }
      if (visited.has(chain.end)) return { kind: 'failure', error: new DnsError('ESERVFAIL', name, `CNAME loop at ${chain.end}`) }
      visited.add(chain.end)
      qname = chain.end
    }
    return { kind: 'failure', error: new DnsError('ESERVFAIL', name, `CNAME chain longer than ${MAX_CHASE} lookups`) }
  }
}
