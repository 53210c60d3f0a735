import { test } from 'node:test'
import assert from 'node:assert/strict'
import { boundedMemo } from '../../../src/proxy/memo.js'

test('a key asked again is answered from the table, without calling the function', () => {
  const calls: string[] = []
  const upper = boundedMemo(4, (k: string) => { calls.push(k); return k.toUpperCase() })
  assert.equal(upper('a'), 'A')
  assert.equal(upper('a'), 'A')
  assert.equal(upper('b'), 'B')
  assert.deepEqual(calls, ['a', 'b'])
})

test('past its size the table starts again: memory stays bounded, answers stay right', () => {
  const calls: string[] = []
  const id = boundedMemo(2, (k: string) => { calls.push(k); return { k } })
  const first = id('a')
  id('b')
  id('c') // full at 2: cleared, then c
  assert.deepEqual(id('c'), { k: 'c' })
  assert.notEqual(id('a'), first, 'a was dropped with the table and computed again')
  assert.deepEqual(id('a'), { k: 'a' })
  assert.deepEqual(calls, ['a', 'b', 'c', 'a'])
})
