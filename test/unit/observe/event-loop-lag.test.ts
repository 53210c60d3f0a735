import t from 'tap'
import { collectDefaultMetrics, Registry } from 'prom-client'
import { monitorEventLoopDelay } from 'node:perf_hooks'
import { EVENT_LOOP_SAMPLE_MS, lagSeconds, registerEventLoopLag } from '../../../src/observe/event-loop-lag.js'
import { DEFAULT_COLLECTORS } from '../../../src/observe/default-metrics.js'
import { createMetrics } from '../../../src/observe/metrics.js'

/** a histogram with the given delays in ns (percentiles by rank, as HdrHistogram reports them closely enough) */
function histogram (samples: number[]): Parameters<typeof lagSeconds>[0] {
  const sorted = [...samples].sort((a, b) => a - b)
  const mean = samples.reduce((a, b) => a + b, 0) / Math.max(1, samples.length)
  return {
    count: samples.length,
    min: sorted[0] ?? 9223372036854776000,
    max: sorted[sorted.length - 1] ?? 0,
    mean: samples.length === 0 ? NaN : mean,
    stddev: 5e6,
    percentile: (p: number) => sorted[Math.min(sorted.length - 1, Math.ceil(p / 100 * sorted.length) - 1)] ?? 0
  }
}

t.test('each delay is the time between two samples less the sampling interval; the spread is kept', async t => {
  const ms = 1e6
  const f = lagSeconds(histogram([99.6 * ms, 100.2 * ms, 101 * ms, 130 * ms]), 100)
  t.equal(f.min, 0, 'a timer that ran early is no lag, not a negative one')
  t.equal(f.max, 0.03)
  t.ok(Math.abs(f.mean - 0.0077) < 1e-9, `mean ${f.mean}`)
  t.equal(f.p50, 0.0002, 'p50: the 2nd of 4 samples')
  t.equal(f.p99, 0.03)
  t.equal(f.stddev, 0.005)
  t.same(lagSeconds(histogram([]), 100), { min: 0, max: 0, mean: 0, stddev: 0, p50: 0, p90: 0, p99: 0 }, 'no sample yet: zeros, not 2^63 ns')
})

t.test('the default metrics are prom-client\'s own list, each collector once, the event-loop lag sampled every 100 ms', async t => {
  t.same(Object.keys(DEFAULT_COLLECTORS), collectDefaultMetrics.metricsList, 'a collector prom-client adds shows here')
  t.equal(EVENT_LOOP_SAMPLE_MS, 100)
  const resolutions: Array<number | undefined> = []
  registerEventLoopLag(new Registry(), 'x_', { monitor: (options) => { resolutions.push(options?.resolution); return monitorEventLoopDelay(options) } })
  t.same(resolutions, [100], 'one histogram, at 100 ms (prom-client\'s would be at 10)')
  const ours = createMetrics()
  const theirs = new Registry()
  collectDefaultMetrics({ register: theirs, prefix: 'egress_router_' })
  const names = (r: Registry): string[] => r.getMetricsAsArray().map((m) => m.name)
  t.same(names(ours.registry).filter((n) => !n.startsWith('egress_router_') || n.includes('nodejs_') || n.includes('process_')).sort(),
    names(theirs).sort(), 'the same metric names as collectDefaultMetrics')
  theirs.clear()
})

t.test('a scrape reports the lag of the loop, near 0 on an idle loop and the block a busy one saw', async t => {
  const m = createMetrics()
  await new Promise((resolve) => setTimeout(resolve, 350))
  await m.registry.metrics()
  // a scrape resets the histogram: what follows covers only the block below
  await new Promise((resolve) => setTimeout(resolve, 250))
  const idle = await m.registry.metrics()
  const p99 = (text: string): number => Number(/\negress_router_nodejs_eventloop_lag_p99_seconds (\S+)/.exec(text)?.[1])
  t.ok(p99(idle) >= 0 && p99(idle) < 0.05, `idle p99 ${p99(idle)} s: the interval is not counted as lag`)
  // after a sample or two: the first sample after a reset only marks the time (node's histogram), so a block
  // right after the scrape would go unseen
  await new Promise((resolve) => setTimeout(resolve, 250))
  const until = Date.now() + 300
  while (Date.now() < until) { /* block the loop for 300 ms */ }
  await new Promise((resolve) => setTimeout(resolve, 250))
  const busy = await m.registry.metrics()
  const max = Number(/\negress_router_nodejs_eventloop_lag_max_seconds (\S+)/.exec(busy)?.[1])
  t.ok(max > 0.15 && max < 1, `max ${max} s after a 300 ms block`)
  t.match(busy, /\negress_router_nodejs_eventloop_lag_seconds \d/)
})
