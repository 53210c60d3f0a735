import t from 'tap'
import { boundedMemo } from '../../../src/proxy/memo.js'

t.test('a key asked again is answered from the table, without calling the function', async t => {
  const calls: string[] = []
  const upper = boundedMemo(4, (k: string) => { calls.push(k); return k.toUpperCase() })
  t.equal(upper('a'), 'A')
  t.equal(upper('a'), 'A')
  t.equal(upper('b'), 'B')
  t.same(calls, ['a', 'b'])
})

t.test('past its size the table starts again: memory stays bounded, answers stay right', async t => {
  const calls: string[] = []
  const id = boundedMemo(2, (k: string) => { calls.push(k); return { k } })
  const first = id('a')
  id('b')
  id('c') // full at 2: cleared, then c
  t.same(id('c'), { k: 'c' })
  t.not(id('a'), first, 'a was dropped with the table and computed again')
  t.same(id('a'), { k: 'a' })
  t.same(calls, ['a', 'b', 'c', 'a'])
})

t.test('an argument that is not a string is remembered by the key keyOf names', async t => {
  const calls: number[] = []
  const double = boundedMemo(4, (o: { n: number }) => { calls.push(o.n); return o.n * 2 }, (o) => o.n)
  t.equal(double({ n: 1 }), 2)
  t.equal(double({ n: 1 }), 2, 'a different object with the same key')
  t.equal(double({ n: 2 }), 4)
  t.same(calls, [1, 2])
})
