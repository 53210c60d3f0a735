import t from 'tap'
import { randomBytes, randomUint16 } from '../../src/random.js'

t.test('randomBytes gives the length asked, fresh bytes each call, and copies the caller may keep', async t => {
  t.equal(randomBytes(0).length, 0)
  t.equal(randomBytes(6).length, 6)
  // more than one pool (4 KiB), and a read larger than the pool
  const seen = new Set<string>()
  for (let i = 0; i < 1000; i++) seen.add(randomBytes(16).toString('hex'))
  t.equal(seen.size, 1000, 'no 16-byte draw repeats')
  t.equal(randomBytes(10_000).length, 10_000)
  const kept = randomBytes(8)
  const copy = Buffer.from(kept)
  for (let i = 0; i < 600; i++) randomBytes(8)
  t.same(kept, copy, 'a drawn buffer is not reused by later draws')
})

t.test('randomBytes refuses a bad length', async t => {
  t.throws(() => randomBytes(-1), RangeError)
  t.throws(() => randomBytes(1.5), RangeError)
  t.throws(() => randomBytes(Number.NaN), RangeError)
})

t.test('randomUint16 covers [0, 65536) roughly uniformly', async t => {
  const draws = 65_536
  const buckets = new Array<number>(16).fill(0)
  let min = 65_536
  let max = -1
  let outside = 0
  for (let i = 0; i < draws; i++) {
    const n = randomUint16()
    if (!Number.isInteger(n) || n < 0 || n >= 65_536) { outside += 1; continue }
    buckets[n >> 12] = (buckets[n >> 12] as number) + 1
    min = Math.min(min, n)
    max = Math.max(max, n)
  }
  t.equal(outside, 0, 'every draw is an integer in range')
  t.ok(min < 64 && max > 65_472, `spans the range (${min}..${max})`)
  // 4,096 expected per bucket; the standard deviation is ~62, so ±600 fails only for a broken generator
  for (const [i, n] of buckets.entries()) t.ok(Math.abs(n - 4096) < 600, `bucket ${i}: ${n}`)
})
