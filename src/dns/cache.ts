/**
 * What the resolver knows about one name, and how each lookup outcome changes it: a pure state
 * machine over an injected clock (`now` in milliseconds), so every rule below is unit-tested
 * without sockets or timers.
 *
 * Rules:
 * - An answer is kept for its TTL clamped to [minTtlMs, maxTtlMs]: TTL 0 must not turn into a
 *   query per connection, and a week-long TTL must not pin an address past maxTtl.
 * - It should be refreshed before it expires: `refreshAt` is `refreshAhead` (3/4) of the way
 *   through the clamped TTL, so a watched name is re-asked while the old answer is still good.
 * - A transient failure (SERVFAIL, REFUSED, timeouts) never drops a good answer: it is served,
 *   marked stale once past its TTL, for up to maxStaleMs after expiry, while retries back off
 *   exponentially from backoffBaseMs to backoffMaxMs with jitter (each delay drawn in [½d, d]).
 *   Without a good answer, the failure itself is remembered until the next retry, so a name whose
 *   servers are down is not re-asked by every caller.
 * - NXDOMAIN and NODATA are answers (negative-cached for the SOA's TTL, clamped like any TTL)...
 * - ...but one negative answer must not drop a set that worked a moment ago (a zone reload, a
 *   service whose endpoints all went unready for a second). While a good set is held, a negative
 *   answer only starts a hold: the good set keeps being served, the name is re-asked on the backoff
 *   schedule, and the set is dropped only once negative answers came back on
 *   `negativeConfirmations` (3) consecutive lookups spanning at least `negativeHoldMs`. Any
 *   positive answer ends the hold; transient failures during the hold neither extend nor end it.
 *   The hold never serves a set for longer than maxStaleMs past its expiry, as for failures.
 */
import type { IpAddress } from '../config/types.js'
import type { DnsError } from '../errors.js'

export interface TtlLimits {
  readonly minTtlMs: number
  readonly maxTtlMs: number
  readonly maxStaleMs: number
}

export interface CachePolicy extends TtlLimits {
  /** fraction of the clamped TTL after which a refresh is due */
  readonly refreshAhead: number
  readonly backoffBaseMs: number
  readonly backoffMaxMs: number
  readonly negativeConfirmations: number
  readonly negativeHoldMs: number
}

/** The defaults, derived from the three configured limits (EGRESS_DNS_MIN_TTL / MAX_TTL / MAX_STALE). */
export function cachePolicy (limits: TtlLimits, overrides: Partial<CachePolicy> = {}): CachePolicy {
  const backoffBaseMs = Math.max(100, limits.minTtlMs)
  return {
    ...limits,
    refreshAhead: 0.75,
    backoffBaseMs,
    backoffMaxMs: Math.max(backoffBaseMs, Math.min(60_000, limits.maxTtlMs)),
    negativeConfirmations: 3,
    negativeHoldMs: Math.max(limits.minTtlMs, 10_000),
    ...overrides
  }
}

export interface GoodAnswer {
  readonly addresses: readonly IpAddress[]
  readonly fetchedAt: number
  readonly expiresAt: number
  readonly refreshAt: number
}

export interface NegativeAnswer {
  readonly reason: 'NXDOMAIN' | 'NODATA'
  readonly expiresAt: number
}

export interface CacheEntry {
  readonly good: GoodAnswer | null
  readonly negative: NegativeAnswer | null
  /** negative answers seen in a row while `good` is held, and when the first of them came */
  readonly negativeStreak: number
  readonly negativeSince: number | null
  /** transient failures in a row, and the last one */
  readonly failures: number
  readonly lastError: DnsError | null
  /** when set, the next lookup is due then (a backoff after a failure, or a hold re-check) */
  readonly retryAt: number | null
}

export type Outcome =
  | { readonly kind: 'answer', readonly addresses: readonly IpAddress[], readonly ttlSec: number }
  | { readonly kind: 'negative', readonly reason: 'NXDOMAIN' | 'NODATA', readonly ttlSec: number }
  | { readonly kind: 'failure', readonly error: DnsError }

export type View =
  | { readonly kind: 'fresh', readonly good: GoodAnswer }
  | { readonly kind: 'stale', readonly good: GoodAnswer }
  | { readonly kind: 'negative', readonly negative: NegativeAnswer }
  | { readonly kind: 'error', readonly error: DnsError }
  | { readonly kind: 'miss' }

export const EMPTY_ENTRY: CacheEntry = {
  good: null, negative: null, negativeStreak: 0, negativeSince: null, failures: 0, lastError: null, retryAt: null
}

export function clampTtlMs (ttlSec: number, limits: TtlLimits): number {
  const ms = Number.isFinite(ttlSec) && ttlSec > 0 ? ttlSec * 1000 : 0
  return Math.min(limits.maxTtlMs, Math.max(limits.minTtlMs, ms))
}

/** Delay before retry number `n` (1-based): base·2^(n-1), capped, then jittered into [½d, d]. */
export function backoffMs (n: number, policy: CachePolicy, random: () => number): number {
  const exp = Math.min(policy.backoffMaxMs, policy.backoffBaseMs * 2 ** Math.min(30, Math.max(0, n - 1)))
  return Math.round(exp * (0.5 + 0.5 * random()))
}

/** How long a good answer may still be served at all (fresh, stale, or held). */
function servable (good: GoodAnswer, now: number, policy: CachePolicy): boolean {
  return now < good.expiresAt + policy.maxStaleMs
}

export function applyOutcome (entry: CacheEntry, outcome: Outcome, now: number, policy: CachePolicy, random: () => number): CacheEntry {
  switch (outcome.kind) {
    case 'answer': {
      if (outcome.addresses.length === 0) return applyOutcome(entry, { kind: 'negative', reason: 'NODATA', ttlSec: outcome.ttlSec }, now, policy, random)
      const ttl = clampTtlMs(outcome.ttlSec, policy)
      return {
        ...EMPTY_ENTRY,
        good: { addresses: outcome.addresses, fetchedAt: now, expiresAt: now + ttl, refreshAt: now + Math.round(ttl * policy.refreshAhead) }
      }
    }
    case 'negative': {
      const good = entry.good
      if (good !== null && servable(good, now, policy)) {
        const streak = entry.negativeStreak + 1
        const since = entry.negativeSince ?? now
        const confirmed = streak >= policy.negativeConfirmations && now - since >= policy.negativeHoldMs
        if (!confirmed) {
          return { ...entry, negativeStreak: streak, negativeSince: since, failures: 0, lastError: null, retryAt: now + backoffMs(streak, policy, random) }
        }
      }
      return { ...EMPTY_ENTRY, negative: { reason: outcome.reason, expiresAt: now + clampTtlMs(outcome.ttlSec, policy) } }
    }
    case 'failure': {
      const failures = entry.failures + 1
      const good = entry.good !== null && servable(entry.good, now, policy) ? entry.good : null
      // A hold keeps its own clock; a failure only pushes the next try out by the backoff.
      return { ...entry, good, failures, lastError: outcome.error, retryAt: now + backoffMs(failures, policy, random) }
    }
  }
}

export function viewEntry (entry: CacheEntry, now: number, policy: CachePolicy): View {
  const { good, negative, lastError, retryAt } = entry
  if (good !== null && now < good.expiresAt) return { kind: 'fresh', good }
  if (good !== null && servable(good, now, policy)) return { kind: 'stale', good }
  if (negative !== null && now < negative.expiresAt) return { kind: 'negative', negative }
  if (lastError !== null && retryAt !== null && now < retryAt) return { kind: 'error', error: lastError }
  return { kind: 'miss' }
}

/** When the name should next be asked, if someone keeps it fresh (watched, or recently used). */
export function nextLookupAt (entry: CacheEntry): number {
  if (entry.retryAt !== null) return entry.retryAt
  if (entry.good !== null) return entry.good.refreshAt
  if (entry.negative !== null) return entry.negative.expiresAt
  return Number.NEGATIVE_INFINITY
}

/** The entry carries nothing a lookup could use any more. */
export function isEvictable (entry: CacheEntry, now: number, policy: CachePolicy): boolean {
  return viewEntry(entry, now, policy).kind === 'miss'
}

/** A held good set that negative answers are currently contradicting. */
export function isHeld (entry: CacheEntry): boolean {
  return entry.good !== null && entry.negativeStreak > 0
}
