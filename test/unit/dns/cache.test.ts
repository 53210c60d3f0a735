import t from 'tap'
import fc from 'fast-check'
import {
  applyOutcome, backoffMs, cachePolicy, clampTtlMs, EMPTY_ENTRY, isEvictable, isHeld, nextLookupAt, viewEntry,
  type CacheEntry, type Outcome
} from '../../../src/dns/cache.js'
import { DnsError } from '../../../src/errors.js'

const policy = cachePolicy({ minTtlMs: 2000, maxTtlMs: 300_000, maxStaleMs: 3_600_000 })
const noJitter = (): number => 1 // backoff delays at their full value
const ip = (address: string) => ({ address, family: 4 as const })
const answer = (addresses: string[], ttlSec: number): Outcome => ({ kind: 'answer', addresses: addresses.map(ip), ttlSec })
const nx = (ttlSec = 0): Outcome => ({ kind: 'negative', reason: 'NXDOMAIN', ttlSec })
const fail = (code = 'ESERVFAIL'): Outcome => ({ kind: 'failure', error: new DnsError(code, 'h.test', 'boom') })
const apply = (e: CacheEntry, o: Outcome, now: number): CacheEntry => applyOutcome(e, o, now, policy, noJitter)

t.test('TTLs are clamped to [minTtl, maxTtl]; 0 and nonsense become minTtl', async t => {
  t.equal(clampTtlMs(0, policy), 2000)
  t.equal(clampTtlMs(1, policy), 2000)
  t.equal(clampTtlMs(60, policy), 60_000)
  t.equal(clampTtlMs(86_400, policy), 300_000)
  t.equal(clampTtlMs(Number.NaN, policy), 2000)
  t.equal(clampTtlMs(-5, policy), 2000)
})

t.test('an answer is fresh for its clamped TTL, refreshed at 3/4, then stale up to maxStale, then gone', async t => {
  const e = apply(EMPTY_ENTRY, answer(['192.0.2.1'], 60), 1000)
  t.match(e.good, { fetchedAt: 1000, expiresAt: 61_000, refreshAt: 46_000 })
  t.equal(nextLookupAt(e), 46_000)
  t.equal(viewEntry(e, 60_999, policy).kind, 'fresh')
  t.equal(viewEntry(e, 61_000, policy).kind, 'stale')
  t.equal(viewEntry(e, 61_000 + 3_600_000 - 1, policy).kind, 'stale')
  t.equal(viewEntry(e, 61_000 + 3_600_000, policy).kind, 'miss')
  t.equal(isEvictable(e, 61_000 + 3_600_000, policy), true)
  t.equal(isEvictable(e, 61_000, policy), false)
})

t.test('TTL 0 is held for minTtl, so it cannot become a query storm', async t => {
  const e = apply(EMPTY_ENTRY, answer(['192.0.2.1'], 0), 0)
  t.equal(e.good?.expiresAt, 2000)
  t.equal(nextLookupAt(e), 1500)
})

t.test('a failure keeps the good answer, and retries back off exponentially to the cap', async t => {
  let e = apply(EMPTY_ENTRY, answer(['192.0.2.1'], 10), 0)
  const retries: number[] = []
  let now = 10_000
  for (let i = 0; i < 8; i++) {
    e = apply(e, fail(), now)
    retries.push((e.retryAt ?? 0) - now)
    now = e.retryAt ?? now
  }
  t.same(retries, [2000, 4000, 8000, 16_000, 32_000, 60_000, 60_000, 60_000])
  t.equal(e.failures, 8)
  t.same(e.good?.addresses, [ip('192.0.2.1')], 'the last good set is still there')
  t.equal(viewEntry(e, now, policy).kind, 'stale')
  t.equal(nextLookupAt(e), e.retryAt)
  t.equal(e.lastError?.code, 'ESERVFAIL')
})

t.test('jitter draws each delay into [d/2, d]', async t => {
  fc.assert(fc.property(fc.integer({ min: 1, max: 40 }), fc.double({ min: 0, max: 1, maxExcluded: true, noNaN: true }), (n, r) => {
    const full = Math.min(policy.backoffMaxMs, policy.backoffBaseMs * 2 ** (n - 1))
    const d = backoffMs(n, policy, () => r)
    return d >= Math.floor(full / 2) && d <= full
  }))
})

t.test('a failure drops a good set older than maxStale', async t => {
  const e0 = apply(EMPTY_ENTRY, answer(['192.0.2.1'], 10), 0)
  const e = apply(e0, fail(), 10_000 + 3_600_000)
  t.equal(e.good, null)
  t.equal(viewEntry(e, 10_000 + 3_600_000, policy).kind, 'error')
})

t.test('without a good answer, a failure is remembered until the retry, then it is a miss', async t => {
  const e = apply(EMPTY_ENTRY, fail('ETIMEOUT'), 0)
  t.match(viewEntry(e, 1999, policy), { kind: 'error', error: { code: 'ETIMEOUT' } })
  t.equal(viewEntry(e, 2000, policy).kind, 'miss')
})

t.test('a new answer clears failures and replaces the set', async t => {
  let e = apply(EMPTY_ENTRY, answer(['192.0.2.1'], 10), 0)
  e = apply(e, fail(), 10_000)
  e = apply(e, answer(['192.0.2.2'], 10), 12_000)
  t.match(e, { failures: 0, lastError: null, retryAt: null })
  t.same(e.good?.addresses, [ip('192.0.2.2')])
  t.equal(viewEntry(e, 12_000, policy).kind, 'fresh')
})

t.test('NXDOMAIN with nothing before is a negative answer for its clamped TTL', async t => {
  const e = apply(EMPTY_ENTRY, nx(0), 0)
  t.match(viewEntry(e, 1999, policy), { kind: 'negative', negative: { reason: 'NXDOMAIN' } })
  t.equal(viewEntry(e, 2000, policy).kind, 'miss')
  t.equal(nextLookupAt(e), 2000)
  const long = apply(EMPTY_ENTRY, { kind: 'negative', reason: 'NODATA', ttlSec: 60 }, 0)
  t.match(viewEntry(long, 59_999, policy), { kind: 'negative', negative: { reason: 'NODATA' } })
})

t.test('one NXDOMAIN does not drop a working set: held until 3 in a row spanning negativeHoldMs', async t => {
  // negativeHoldMs defaults to max(minTtl, 10 s) = 10 s; backoff 2 s, 4 s, 8 s…
  let e = apply(EMPTY_ENTRY, answer(['192.0.2.1'], 60), 0)
  e = apply(e, nx(), 45_000)
  t.equal(isHeld(e), true)
  t.equal(e.negativeStreak, 1)
  t.equal(e.retryAt, 47_000)
  t.equal(viewEntry(e, 45_000, policy).kind, 'fresh', 'the held set is still served')
  e = apply(e, nx(), 47_000)
  t.equal(e.negativeStreak, 2)
  t.equal(e.retryAt, 51_000)
  e = apply(e, nx(), 51_000)
  t.equal(e.negativeStreak, 3, 'three in a row, but only 6 s since the first: still held')
  t.equal(isHeld(e), true)
  t.equal(viewEntry(e, 51_000, policy).kind, 'fresh')
  e = apply(e, nx(), 59_000)
  t.equal(isHeld(e), false, '14 s after the first negative: confirmed')
  t.equal(e.good, null)
  t.match(viewEntry(e, 59_000, policy), { kind: 'negative' })
})

t.test('a positive answer during the hold ends it; the streak starts over', async t => {
  let e = apply(EMPTY_ENTRY, answer(['192.0.2.1'], 60), 0)
  e = apply(e, nx(), 45_000)
  e = apply(e, nx(), 47_000)
  e = apply(e, answer(['192.0.2.1'], 60), 51_000)
  t.match(e, { negativeStreak: 0, negativeSince: null, retryAt: null })
  e = apply(e, nx(), 96_000)
  t.match(e, { negativeStreak: 1, negativeSince: 96_000 })
})

t.test('failures during a hold neither confirm nor end it', async t => {
  let e = apply(EMPTY_ENTRY, answer(['192.0.2.1'], 60), 0)
  e = apply(e, nx(), 45_000)
  e = apply(e, fail(), 47_000)
  e = apply(e, fail(), 49_000)
  t.match(e, { negativeStreak: 1, negativeSince: 45_000, failures: 2 })
  t.equal(isHeld(e), true)
  e = apply(e, nx(), 53_000)
  t.match(e, { negativeStreak: 2, failures: 0 })
})

t.test('a hold cannot serve a set past maxStale', async t => {
  const short = cachePolicy({ minTtlMs: 1000, maxTtlMs: 10_000, maxStaleMs: 5000 }, { negativeHoldMs: 60_000 })
  let e = applyOutcome(EMPTY_ENTRY, answer(['192.0.2.1'], 10), 0, short, noJitter)
  e = applyOutcome(e, nx(), 9000, short, noJitter)
  t.equal(isHeld(e), true)
  t.equal(viewEntry(e, 14_999, short).kind, 'stale')
  t.equal(viewEntry(e, 15_000, short).kind, 'miss')
  e = applyOutcome(e, nx(), 15_000, short, noJitter)
  t.equal(isHeld(e), false, 'not servable any more: the negative is taken')
  t.equal(viewEntry(e, 15_000, short).kind, 'negative')
})

t.test('an empty answer is NODATA', async t => {
  const e = apply(EMPTY_ENTRY, answer([], 60), 0)
  t.match(viewEntry(e, 0, policy), { kind: 'negative', negative: { reason: 'NODATA' } })
})

t.test('an empty entry is due now and a miss', async t => {
  t.equal(nextLookupAt(EMPTY_ENTRY), Number.NEGATIVE_INFINITY)
  t.equal(viewEntry(EMPTY_ENTRY, 0, policy).kind, 'miss')
})

t.test('property: whatever the outcomes, a good set is served only within maxStale of its expiry and never after a confirmed negative', async t => {
  const outcomeArb = fc.oneof(
    fc.constantFrom(answer(['192.0.2.1'], 5), answer(['192.0.2.2'], 0), answer(['192.0.2.3'], 100_000)),
    fc.constantFrom(nx(0), nx(30), { kind: 'negative', reason: 'NODATA', ttlSec: 1 } as Outcome),
    fc.constantFrom(fail('ESERVFAIL'), fail('ETIMEOUT'))
  )
  fc.assert(fc.property(fc.array(fc.tuple(outcomeArb, fc.integer({ min: 0, max: 120_000 })), { maxLength: 30 }), steps => {
    let e = EMPTY_ENTRY
    let now = 0
    for (const [outcome, gap] of steps) {
      now += gap
      e = apply(e, outcome, now)
      const view = viewEntry(e, now, policy)
      if (view.kind === 'fresh' && !(now < view.good.expiresAt)) return false
      if (view.kind === 'stale' && !(now < view.good.expiresAt + policy.maxStaleMs)) return false
      if (outcome.kind === 'answer' && view.kind !== 'fresh') return false
      if (outcome.kind === 'negative' && e.good === null && view.kind !== 'negative') return false
      if (e.negativeStreak > 0 && e.good === null) return false
      if (e.good !== null && e.good.expiresAt - e.good.fetchedAt > policy.maxTtlMs) return false
    }
    return true
  }))
})
