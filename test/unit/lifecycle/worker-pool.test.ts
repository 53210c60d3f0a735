/**
 * The worker pool's state machine against scripted workers (the IPC protocol of worker-protocol.ts, no
 * processes): start only after hello, all-or-nothing start, replacement with back-off, reload to running
 * workers and to a replacement that was starting, metrics with a deadline, stop. The real processes and
 * sockets are exercised in test/netns/workers.test.ts.
 */
import { EventEmitter } from 'node:events'
import t from 'tap'
import { pino } from 'pino'
import { startWorkerPool, type PoolWorker, type WorkerPoolOptions } from '../../../src/lifecycle/worker-pool.js'
import type { FromWorker, ToWorker } from '../../../src/lifecycle/worker-protocol.js'
import { Readiness } from '../../../src/observe/health.js'
import { createMetrics } from '../../../src/observe/metrics.js'

class FakeWorker extends EventEmitter implements PoolWorker {
  static nextId = 1
  readonly id = FakeWorker.nextId++
  readonly sent: ToWorker[] = []
  connected = true
  dead = false
  readonly process = { pid: 10_000 + this.id, kill: (signal?: NodeJS.Signals): boolean => { this.exit(null, signal ?? 'SIGTERM'); return true } }
  send (message: ToWorker): boolean { this.sent.push(message); return this.connected }
  isConnected (): boolean { return this.connected }
  isDead (): boolean { return this.dead }
  say (message: FromWorker): void { this.emit('message', message) }
  exit (code: number | null, signal: NodeJS.Signals | null = null): void {
    if (this.dead) return
    this.dead = true
    this.connected = false
    this.emit('exit', code, signal)
  }
  last<T extends ToWorker['t']> (t: T): Extract<ToWorker, { t: T }> | undefined {
    return this.sent.filter((m) => m.t === t).at(-1) as Extract<ToWorker, { t: T }> | undefined
  }
}

/** A fake that answers like worker-main.ts: hello at once, started on start, stop → exit 0. */
function obliging (f: FakeWorker, opts: { fail?: string } = {}): FakeWorker {
  const send = f.send.bind(f)
  f.send = (m) => {
    const ok = send(m)
    if (m.t === 'start') setImmediate(() => { f.say(opts.fail === undefined ? { t: 'started' } : { t: 'start-failed', message: opts.fail }) })
    if (m.t === 'stop') setImmediate(() => { f.exit(0) })
    if (m.t === 'update') setImmediate(() => { f.say({ t: 'updated', id: m.id, error: null }) })
    return ok
  }
  setImmediate(() => { f.say({ t: 'hello' }) })
  return f
}

const tick = async (ms = 0): Promise<void> => await new Promise((resolve) => setTimeout(resolve, ms))

function options (fork: () => PoolWorker, extra: Partial<WorkerPoolOptions> = {}): WorkerPoolOptions & { readiness: Readiness, metrics: ReturnType<typeof createMetrics> } {
  return {
    count: 2,
    settings: { EGRESS_ROUTER_MODE: 'dns-proxy', EGRESS_DNS_PROXY_DESTINATION: '53 192.0.2.53' },
    listeners: [],
    listenHosts: ['198.51.100.1'],
    logger: pino({ level: 'silent' }),
    metrics: createMetrics({ defaultMetrics: false }),
    readiness: new Readiness(),
    fork,
    timeouts: { start: 2_000, update: 300, metrics: 100, stopGrace: 200 },
    ...extra
  } as WorkerPoolOptions & { readiness: Readiness, metrics: ReturnType<typeof createMetrics> }
}

async function gauge (m: ReturnType<typeof createMetrics>, state: string): Promise<number | undefined> {
  return (await m.workers.get()).values.find((v) => v.labels.state === state)?.value
}

t.test('start: each worker gets its settings after hello; ready once all serve', async t => {
  const forked: FakeWorker[] = []
  const o = options(() => { const f = obliging(new FakeWorker()); forked.push(f); return f })
  const pool = await startWorkerPool(o)
  t.equal(forked.length, 2)
  for (const f of forked) t.same(f.sent[0], { t: 'start', settings: o.settings, listeners: [], listenHosts: ['198.51.100.1'], logFormat: undefined }, `worker ${f.id}: start first`)
  t.same(pool.pids().sort(), forked.map((f) => f.process.pid).sort())
  t.same(o.readiness.report().listeners, { ok: true, detail: '' })
  t.equal(await gauge(o.metrics, 'running'), 2)
  for (const f of forked) f.say({ t: 'check', name: 'names', ok: f.id % 2 === 0, detail: f.id % 2 === 0 ? '' : 'no address yet for db.example' })
  t.match(o.readiness.report().names, { ok: false, detail: /^worker \d+: no address yet for db.example$/ }, 'one worker without the name: not ready')
  await pool.close(50)
  t.ok(forked.every((f) => f.dead && f.last('stop')?.drainMs === 50), 'close: every worker was asked to drain for 50 ms and exited')
})

t.test('a worker that cannot start fails the start, naming it, and the others are stopped', async t => {
  const forked: FakeWorker[] = []
  const o = options(() => { const f = obliging(new FakeWorker(), forked.length === 1 ? { fail: 'listen EADDRINUSE 198.51.100.1:53' } : {}); forked.push(f); return f })
  await t.rejects(startWorkerPool(o), { message: `worker ${String(FakeWorker.nextId - 1)}: listen EADDRINUSE 198.51.100.1:53` })
  t.ok(forked.every((f) => f.dead), 'no worker is left')
  t.equal(forked.length, 2, 'and none was replaced')
})

t.test('a worker that dies while serving is replaced; young deaths back off; restarts are counted', async t => {
  const forked: FakeWorker[] = []
  const o = options(() => { const f = obliging(new FakeWorker()); forked.push(f); return f })
  const pool = await startWorkerPool(o)
  const first = forked[0] as FakeWorker
  first.exit(null, 'SIGKILL')
  t.same(o.readiness.report().listeners, { ok: true, detail: '1 of 2 workers serving' }, 'still ready with one serving')
  await tick(50)
  t.equal(forked.length, 2, 'it died young (within 10 s of its start): not replaced at once')
  await tick(100)
  t.equal(forked.length, 3, 'replaced after 100 ms')
  await tick(20)
  t.equal(await gauge(o.metrics, 'running'), 2)
  t.same(o.readiness.report().listeners, { ok: true, detail: '' })
  // the replacement dies young too: the next one waits 200 ms
  ;(forked[2] as FakeWorker).exit(1)
  await tick(120)
  t.equal(forked.length, 3, 'not yet replaced after 120 ms')
  await tick(200)
  t.equal(forked.length, 4, 'replaced after the back-off')
  t.equal((await o.metrics.workerRestarts.get()).values[0]?.value, 2)
  await pool.close(10)
  ;(forked[3] as FakeWorker).exit(0)
  await tick(150)
  t.equal(forked.length, 4, 'nothing is replaced once the pool is closing')
})

t.test('reload: every running worker applies it; a failure or a silent worker is named', async t => {
  const forked: FakeWorker[] = []
  const o = options(() => { const f = obliging(new FakeWorker()); forked.push(f); return f })
  const pool = await startWorkerPool(o)
  const next = { ...o.settings, EGRESS_DNS_PROXY_DESTINATION: '53 192.0.2.54' }
  await pool.update(next)
  t.ok(forked.every((f) => f.last('update')?.settings === next), 'both got the new settings')
  const [a, b] = forked as [FakeWorker, FakeWorker]
  a.send = (m) => { a.sent.push(m); if (m.t === 'update') setImmediate(() => { a.say({ t: 'updated', id: m.id, error: 'listen EACCES 198.51.100.1:80' }) }); return true }
  b.send = (m) => { b.sent.push(m); return true }
  await t.rejects(pool.update(next), { message: `worker ${a.id}: listen EACCES 198.51.100.1:80; worker ${b.id}: no answer` })
  a.exit(0)
  b.exit(0)
  await pool.close(0)
})

t.test('a replacement that was starting during a reload gets the newer settings once it serves', async t => {
  const forked: FakeWorker[] = []
  let holdStart = false
  const o = options(() => {
    const f = new FakeWorker()
    forked.push(f)
    if (!holdStart) return obliging(f)
    // this one says hello but reports started only when the test says so
    const send = f.send.bind(f)
    f.send = (m) => { const ok = send(m); if (m.t === 'update') setImmediate(() => { f.say({ t: 'updated', id: m.id, error: null }) }); if (m.t === 'stop') setImmediate(() => { f.exit(0) }); return ok }
    setImmediate(() => { f.say({ t: 'hello' }) })
    return f
  })
  const pool = await startWorkerPool(o)
  holdStart = true
  ;(forked[0] as FakeWorker).exit(null, 'SIGKILL')
  await tick(150)
  const fresh = forked[2] as FakeWorker
  t.same(fresh.last('start')?.settings, o.settings, 'the replacement started with the settings of then')
  const next = { ...o.settings, EGRESS_DNS_PROXY_DESTINATION: '53 192.0.2.99' }
  await pool.update(next)
  t.equal(fresh.last('update'), undefined, 'a worker still starting is not asked (it cannot answer yet)')
  t.equal((forked[1] as FakeWorker).last('update')?.settings, next)
  fresh.say({ t: 'started' })
  t.same(fresh.last('update'), { t: 'update', id: -1, settings: next }, 'once serving, it is sent the newer settings')
  await pool.close(0)
})

t.test('metrics: the answers of those that answer in time', async t => {
  const forked: FakeWorker[] = []
  const o = options(() => { const f = obliging(new FakeWorker()); forked.push(f); return f })
  const pool = await startWorkerPool(o)
  const [a, b] = forked as [FakeWorker, FakeWorker]
  const sample = [{ name: 'egress_router_connections_total', help: 'h', type: 'counter', aggregator: 'sum', values: [{ value: 3, labels: {} }] }]
  a.send = (m) => { a.sent.push(m); if (m.t === 'metrics') setImmediate(() => { a.say({ t: 'metrics', id: m.id, metrics: sample as never }) }); if (m.t === 'stop') setImmediate(() => { a.exit(0) }); return true }
  b.send = (m) => { b.sent.push(m); if (m.t === 'stop') setImmediate(() => { b.exit(0) }); return true }
  const started = Date.now()
  const got = await pool.metrics()
  t.same(got, [sample], 'the silent worker is left out')
  t.ok(Date.now() - started < 1_000, 'after the metrics deadline, not longer')
  await pool.close(0)
})

t.test('a worker still loading when the pool closes is told to stop when it says hello, not started', async t => {
  const forked: FakeWorker[] = []
  const o = options(() => {
    const f = new FakeWorker()
    forked.push(f)
    if (forked.length <= 2) return obliging(f)
    // the replacement: silent until the test makes it say hello; stop → exit
    const send = f.send.bind(f)
    f.send = (m) => { const ok = send(m); if (m.t === 'stop') setImmediate(() => { f.exit(0) }); return ok }
    return f
  })
  const pool = await startWorkerPool(o)
  ;(forked[0] as FakeWorker).exit(null, 'SIGKILL')
  await tick(150)
  const loading = forked[2] as FakeWorker
  // its stop, sent while it was loading, is lost (nothing listens yet)
  loading.connected = true
  const closed = pool.close(0)
  loading.sent.length = 0
  loading.say({ t: 'hello' })
  await closed
  t.same(loading.sent.map((m) => m.t), ['stop'], 'hello while closing: stop, not start')
  t.ok(loading.dead, 'and it exited')
})

t.test('a message to a worker that is exiting fails like node reports it (an \'error\' event, EPIPE): logged, the pool still stops', async t => {
  const o = options(() => {
    const f = obliging(new FakeWorker())
    const send = f.send.bind(f)
    // node's ChildProcess.send: the pipe write fails, the error is emitted on the next tick, send still returns true
    f.send = (m) => {
      if (m.t !== 'stop') return send(m)
      f.sent.push(m)
      process.nextTick(() => { f.emit('error', Object.assign(new Error('write EPIPE'), { code: 'EPIPE' })) })
      setImmediate(() => { f.exit(0) })
      return true
    }
    return f
  })
  const pool = await startWorkerPool(o)
  await pool.close(1_000)
  t.equal(o.readiness.ready(), false, 'stopped, and this process is still here to say so')
})
