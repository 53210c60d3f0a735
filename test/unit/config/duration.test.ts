import t from 'tap'
import fc from 'fast-check'
import { MAX_DURATION_MS, formatDuration, parseDuration } from '../../../src/config/duration.js'

const BAD = 'must be a duration like 300ms, 25s, 1m30s or 24h (a bare number is seconds)'

t.test('Go-style durations become milliseconds', async t => {
  const cases: Array<[string, number]> = [
    ['25s', 25_000], ['300ms', 300], ['1m30s', 90_000], ['24h', 86_400_000], ['1.5h', 5_400_000],
    ['2h45m', 9_900_000], ['1500us', 2], ['1500µs', 2], ['1500μs', 2], ['2000000ns', 2], ['0s', 0], ['.5s', 500],
    ['1.s', 1000], ['1h0m0s', 3_600_000], ['10s500ms', 10_500]
  ]
  for (const [text, ms] of cases) t.same(parseDuration(text), { ok: true, value: ms }, text)
})

t.test('a bare number is seconds', async t => {
  t.same(parseDuration('30'), { ok: true, value: 30_000 })
  t.same(parseDuration('0'), { ok: true, value: 0 })
  t.same(parseDuration('2.5'), { ok: true, value: 2500 })
})

t.test('malformed, negative and overlong durations are rejected', async t => {
  for (const text of ['', 's', '5x', '-5s', '+5s', '5 s', ' 5s', '5S', '1d', '5s5', 'ms', '1..5s', '.s', '.', 'Infinity', 'NaN', '1e3', '0x10']) {
    t.same(parseDuration(text), { ok: false, message: BAD }, JSON.stringify(text))
  }
  t.same(parseDuration('597h'), { ok: false, message: 'is too long (at most 596h31m23s)' })
  t.same(parseDuration('99999999999999999999999h'), { ok: false, message: 'is too long (at most 596h31m23s)' })
  t.same(parseDuration('1'.repeat(65)), { ok: false, message: BAD })
  t.same(parseDuration(`${MAX_DURATION_MS}ms`), { ok: true, value: MAX_DURATION_MS })
})

t.test('formatDuration is the inverse for whole milliseconds', async t => {
  t.equal(formatDuration(0), '0s')
  t.equal(formatDuration(90_000), '1m30s')
  t.equal(formatDuration(86_400_000), '24h')
  t.equal(formatDuration(1500), '1s500ms')
  fc.assert(fc.property(fc.integer({ min: 0, max: MAX_DURATION_MS }), ms => {
    const back = parseDuration(formatDuration(ms))
    return back.ok && back.value === ms
  }), { numRuns: 1000 })
})

t.test('property: any string gives a duration or a clean failure', async t => {
  fc.assert(fc.property(fc.string({ unit: fc.constantFrom(...'0123456789.smhuµn -+xe'), maxLength: 30 }), text => {
    const r = parseDuration(text)
    return r.ok ? Number.isInteger(r.value) && r.value >= 0 && r.value <= MAX_DURATION_MS : r.message.length > 0
  }), { numRuns: 2000 })
})
