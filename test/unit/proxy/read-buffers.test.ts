import t from 'tap'
import { EARLY_READ_LIMIT, LARGE_READ, LARGE_READ_BUDGET, MEDIUM_READ, ReadSide, SMALL_READ, largeReadsInUse } from '../../../src/proxy/read-buffers.js'

/** the buffer net would read into next, per side: asked for once at the start, then after every read */
const current = new WeakMap<ReadSide, Buffer>()

/** A side driven as net drives it: a read into the current buffer, the callback with how much it read, the next buffer. */
function reads (side: ReadSide, sizes: readonly number[]): number[] {
  let buf = current.get(side) ?? side.onread.buffer()
  const seen: number[] = []
  for (const n of sizes) {
    seen.push(buf.length)
    side.onread.callback(Math.min(n, buf.length), buf)
    buf = side.onread.buffer()
  }
  current.set(side, buf)
  seen.push(buf.length)
  return seen
}

const attached = (): ReadSide => {
  const side = new ReadSide()
  side.attach(() => {})
  return side
}

t.test('a side grows on a full read, stays large while reads fill it, and shrinks on a short one', async t => {
  const side = attached()
  t.same(reads(side, [100, SMALL_READ, LARGE_READ, LARGE_READ, 70_000, 10]), [SMALL_READ, SMALL_READ, LARGE_READ, LARGE_READ, LARGE_READ, LARGE_READ, SMALL_READ])
  t.equal(largeReadsInUse(), 0, 'the large buffer went back to the budget when the side shrank')
  t.same(reads(side, [SMALL_READ]), [SMALL_READ, LARGE_READ])
  t.equal(largeReadsInUse(), 1)
  side.release()
  t.equal(largeReadsInUse(), 0, 'and when its socket closed')
})

t.test('past the budget a bulk side reads 64 KiB at a time, and takes a large buffer once one is free', async t => {
  const big = Array.from({ length: LARGE_READ_BUDGET }, attached)
  for (const side of big) reads(side, [SMALL_READ])
  t.equal(largeReadsInUse(), LARGE_READ_BUDGET, 'the budget is used up')
  const late = attached()
  t.same(reads(late, [SMALL_READ, MEDIUM_READ]), [SMALL_READ, MEDIUM_READ, MEDIUM_READ], 'no large buffer left: medium')
  big[0]!.release()
  t.same(reads(late, [MEDIUM_READ]), [MEDIUM_READ, LARGE_READ], 'one freed: the next full read takes it')
  for (const side of big.slice(1)) side.release()
  late.release()
  t.equal(largeReadsInUse(), 0)
})

t.test('a side holding bytes for a write keeps its buffer whatever the read size', async t => {
  const side = attached()
  const buf = side.onread.buffer()
  side.held = true
  side.onread.callback(SMALL_READ, buf)
  t.equal(side.onread.buffer().length, SMALL_READ, 'not swapped under a pending write')
  side.held = false
  side.onread.callback(SMALL_READ, buf)
  t.equal(side.onread.buffer().length, LARGE_READ, 'swapped after a full read once the write is through')
  side.release()
})

t.test('sockets on the small buffer share one, and every chunk read from it is a copy', async t => {
  const got: Buffer[] = []
  const a = new ReadSide()
  a.attach((chunk) => { got.push(chunk) })
  const b = new ReadSide()
  const bufA = a.onread.buffer()
  const bufB = b.onread.buffer()
  t.equal(bufA, bufB, 'one small buffer for both: an idle socket holds none of its own')
  bufA.write('from a', 'latin1')
  a.onread.callback(6, bufA)
  // b has no sink yet: its early bytes are kept while a keeps reading into the same memory
  bufB.write('early b', 'latin1')
  b.onread.callback(7, bufB)
  bufA.write('second', 'latin1')
  a.onread.callback(6, bufA)
  t.same(got.map((c) => c.toString('latin1')), ['from a', 'second'], 'a\'s chunks are intact after the buffer was read into again')
  const early = b.attach(() => {})
  t.equal(early?.toString('latin1'), 'early b', 'b\'s early bytes are intact too')
  t.ok([...got, early as Buffer].every((c) => c.buffer !== bufA.buffer), 'no chunk is a view of the shared buffer')
})

t.test('a side back from a large buffer returns to the shared small one', async t => {
  const side = attached()
  const small = side.onread.buffer()
  reads(side, [SMALL_READ])
  t.equal(side.onread.buffer().length, LARGE_READ)
  reads(side, [10])
  t.equal(side.onread.buffer(), small, 'the shared one, not a new small buffer')
})

t.test('before its relay starts a side reads on, keeping copies on the small buffer, and pauses at the limit', async t => {
  const side = new ReadSide()
  let paused = 0
  side.socket = { pause: () => { paused += 1 } } as unknown as NonNullable<ReadSide['socket']>
  const sent: string[] = []
  let buf = side.onread.buffer()
  // full reads (which would move an attached side to a large buffer) until just under the limit
  const fulls = EARLY_READ_LIMIT / SMALL_READ - 1
  for (let i = 0; i < fulls; i++) {
    const text = String(i).repeat(SMALL_READ).slice(0, SMALL_READ)
    buf.write(text, 'latin1')
    side.onread.callback(SMALL_READ, buf)
    sent.push(text)
    buf = side.onread.buffer()
    t.equal(buf.length, SMALL_READ, `read ${i + 1}: still the small buffer (no large one for bytes nobody relays yet)`)
  }
  t.equal(paused, 0, 'not paused under the limit: a reset or FIN meanwhile is seen')
  t.equal(side.held, false)
  buf.write('last', 'latin1')
  side.onread.callback(SMALL_READ, buf)
  sent.push(buf.toString('latin1'))
  t.equal(side.earlyBytes, EARLY_READ_LIMIT)
  t.equal(paused, 1, 'paused once the limit is reached')
  t.equal(side.held, true, 'and held: its buffer stays as it is')
  t.equal(largeReadsInUse(), 0, 'no large buffer was taken')
  const early = side.attach(() => {})
  t.equal(early?.toString('latin1'), sent.join(''), 'attach hands over every early byte, in order')
  t.equal(side.held, false)
  t.equal(side.earlyBytes, 0)
  t.equal(side.onread.buffer().length, LARGE_READ, 'attached, the reads that filled the small buffer move it to a large one, as they would have')
  t.equal(largeReadsInUse(), 1)
  side.release()
})

t.test('a side with nothing read before its relay starts hands over nothing', async t => {
  const side = new ReadSide()
  t.equal(side.attach(() => {}), null)
})
