/**
 * The event-loop lag gauges, under prom-client's names (`<prefix>nodejs_eventloop_lag_{min,max,mean,stddev,p50,p90,p99}_seconds`
 * and `<prefix>nodejs_eventloop_lag_seconds`), sampled every EVENT_LOOP_SAMPLE_MS instead of prom-client's 10 ms.
 *
 * Why not prom-client's own: its histogram (perf_hooks.monitorEventLoopDelay) runs a libuv timer at the sampling
 * interval, 100 wakeups a second at 10 ms for as long as the daemon runs (an idle http-proxy: 250-270 ms of CPU per
 * 20 s, against 160-170 at 100 ms). And each sample it records is the time between two timer runs, interval included,
 * so its gauges read 0.010 on an idle loop; at 100 ms they would read 0.100, a lag that is not there. Here the
 * interval is taken off (a timer that ran a little early counts as 0): the gauges are the delay itself, 0 when idle.
 *
 * Like prom-client's, the histogram is reset at every scrape (the figures cover the time since the last one), and
 * `nodejs_eventloop_lag_seconds` is how long a setImmediate scheduled by the scrape took to run.
 */
import { monitorEventLoopDelay, type IntervalHistogram } from 'node:perf_hooks'
import type { Registry } from 'prom-client'
import { Gauge } from './prom.js'

/** ms between two samples of the event loop: ten a second (150 per 15 s scrape), each measured to the ns */
export const EVENT_LOOP_SAMPLE_MS = 100

type Stat = 'min' | 'max' | 'mean' | 'stddev' | 'p50' | 'p90' | 'p99'

const HELP: Record<Stat, string> = {
  min: 'The minimum recorded event loop delay.',
  max: 'The maximum recorded event loop delay.',
  mean: 'The mean of the recorded event loop delays.',
  stddev: 'The standard deviation of the recorded event loop delays.',
  p50: 'The 50th percentile of the recorded event loop delays.',
  p90: 'The 90th percentile of the recorded event loop delays.',
  p99: 'The 99th percentile of the recorded event loop delays.'
}

/** how prom-client's aggregator sums a gauge across cluster workers */
const AGGREGATOR: Record<Stat, 'min' | 'max' | 'average'> = {
  min: 'min', max: 'max', mean: 'average', stddev: 'average', p50: 'average', p90: 'average', p99: 'average'
}

const STATS = Object.keys(HELP) as Stat[]

/**
 * The histogram's figures in seconds, the sampling interval taken off each delay (not off the spread). A histogram
 * with no sample yet (min is then 2^63 - 1) gives zeros.
 */
export function lagSeconds (h: Pick<IntervalHistogram, 'count' | 'min' | 'max' | 'mean' | 'stddev' | 'percentile'>, sampleMs: number): Record<Stat, number> {
  if (h.count === 0) return { min: 0, max: 0, mean: 0, stddev: 0, p50: 0, p90: 0, p99: 0 }
  const interval = sampleMs * 1e6
  const delay = (ns: number): number => Math.max(0, ns - interval) / 1e9
  return {
    min: delay(h.min),
    max: delay(h.max),
    mean: delay(h.mean),
    stddev: h.stddev / 1e9,
    p50: delay(h.percentile(50)),
    p90: delay(h.percentile(90)),
    p99: delay(h.percentile(99))
  }
}

export interface EventLoopLagOptions {
  /** default EVENT_LOOP_SAMPLE_MS */
  sampleMs?: number
  /** default perf_hooks.monitorEventLoopDelay (tests watch what it is asked for) */
  monitor?: typeof monitorEventLoopDelay
}

/** Registers the lag gauges on registry and starts sampling (the timer is unref'd: it keeps no process alive). */
export function registerEventLoopLag (registry: Registry, prefix: string, opts: EventLoopLagOptions = {}): void {
  const sampleMs = opts.sampleMs ?? EVENT_LOOP_SAMPLE_MS
  const histogram = (opts.monitor ?? monitorEventLoopDelay)({ resolution: sampleMs })
  histogram.enable()
  const registers = [registry]
  const gauges = new Map<Stat, Gauge>()
  // Registered first, so that a scrape runs its collect, which sets every figure, before it reads the others (as
  // prom-client's own does).
  const lag: Gauge = new Gauge({
    name: `${prefix}nodejs_eventloop_lag_seconds`,
    help: 'Lag of event loop in seconds.',
    registers,
    aggregator: 'average',
    collect: () => {
      const start = process.hrtime.bigint()
      setImmediate(() => { lag.set(Number(process.hrtime.bigint() - start) / 1e9) })
      const figures = lagSeconds(histogram, sampleMs)
      for (const stat of STATS) gauges.get(stat)?.set(figures[stat])
      histogram.reset()
    }
  })
  for (const stat of STATS) {
    gauges.set(stat, new Gauge({ name: `${prefix}nodejs_eventloop_lag_${stat}_seconds`, help: HELP[stat], registers, aggregator: AGGREGATOR[stat] }))
  }
}
