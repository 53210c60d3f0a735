import t from 'tap'
import { fromWorker, HEALTHY_RUN_MS, mergeChecks, restartDelayMs, type Check } from '../../../src/lifecycle/worker-protocol.js'

const w = (id: number, running: boolean, checks: Record<string, Check>): { id: number, running: boolean, checks: Map<string, Check> } =>
  ({ id, running, checks: new Map(Object.entries(checks)) })
const ok: Check = { ok: true, detail: '' }

t.test('mergeChecks: listeners ok while one worker serves, with the count when some are missing', async t => {
  t.same(Object.fromEntries(mergeChecks([], 2)), { listeners: { ok: false, detail: 'no worker is serving (0 of 2)' } })
  t.same(Object.fromEntries(mergeChecks([w(1, true, { listeners: ok }), w(2, true, { listeners: ok })], 2)), { listeners: ok })
  t.same(Object.fromEntries(mergeChecks([w(1, true, { listeners: ok }), w(3, false, {})], 2)), { listeners: { ok: true, detail: '1 of 2 workers serving' } },
    'a replacement still starting does not count')
  t.same(Object.fromEntries(mergeChecks([w(1, true, {}), w(2, true, {})], 2)), { listeners: ok }, 'running means listening: it said so when it started')
})

t.test('mergeChecks: any other check is ok only when every running worker says so; the first failing one is named', async t => {
  const names = (detail: string): Check => ({ ok: false, detail })
  const merged = mergeChecks([
    w(1, true, { listeners: ok, names: ok }),
    w(2, true, { listeners: ok, names: names('no address yet for db.example') }),
    w(3, true, { listeners: ok, names: names('no address yet for other.example') }),
    w(4, false, { names: names('from a worker that is not running') })
  ], 4)
  t.same(merged.get('names'), { ok: false, detail: 'worker 2: no address yet for db.example' })
  t.same(merged.get('listeners'), { ok: true, detail: '3 of 4 workers serving' })
  t.same(mergeChecks([w(1, true, { listeners: ok, names: ok }), w(2, true, { listeners: ok, names: ok })], 2).get('names'), ok)
  t.same(mergeChecks([w(1, true, { listeners: ok, names: names('x') }), w(2, true, { listeners: ok, names: ok })], 2).get('names'), { ok: false, detail: 'worker 1: x' },
    'a later ok does not hide an earlier failure')
})

t.test('restartDelayMs: at once after a healthy run, then doubling from 100 ms to at most 10 s', async t => {
  t.same([0, 1, 2, 3, 4, 5, 6, 7, 8, 20].map(restartDelayMs), [0, 100, 200, 400, 800, 1600, 3200, 6400, 10_000, 10_000])
  t.equal(HEALTHY_RUN_MS, 10_000)
})

t.test('fromWorker: only this protocol\'s messages, nothing else on the channel', async t => {
  t.same(fromWorker({ t: 'started' }), { t: 'started' })
  t.same(fromWorker({ t: 'check', name: 'names', ok: true, detail: '' }), { t: 'check', name: 'names', ok: true, detail: '' })
  for (const other of [null, undefined, 'started', 42, {}, { t: 7 }, { t: 'start' }, { type: 'prom-client:getMetricsRes' }, { cmd: 'NODE_CLUSTER' }]) {
    t.equal(fromWorker(other), null, JSON.stringify(other) ?? 'undefined')
  }
})
