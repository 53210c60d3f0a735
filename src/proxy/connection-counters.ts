/**
 * One listener's connection metrics, counted in plain numbers and handed to prom-client only when someone reads
 * them (metrics.beforeScrape): prom-client hashes the label set on every inc(), even through a labels() child,
 * which per connection and per chunk was a measurable share of a proxy's CPU. Shared by the http proxy and the
 * dns-proxy forwarders.
 */
import type { Metrics, Outcome } from '../observe/metrics.js'

export interface ConnectionCounters {
  accepted (): void
  /** 'up': client → destination; 'down': destination → client */
  bytes (direction: 'up' | 'down', n: number): void
  outcome (outcome: Outcome): void
  /** flush before every scrape from now on */
  attach (): void
  /** a last flush, then no more */
  detach (): void
}

/** `active` is read at each flush: the listener's open connections now. */
export function connectionCounters (metrics: Metrics, labels: { mode: string, listener: string }, active: () => number): ConnectionCounters {
  const upLabels = { ...labels, direction: 'upstream' }
  const downLabels = { ...labels, direction: 'downstream' }
  let accepted = 0
  let up = 0
  let down = 0
  const outcomes = new Map<Outcome, number>()
  /** what this listener has added to the active gauge (listeners on other hosts share these labels) */
  let reportedActive = 0

  const flush = (): void => {
    const now = active()
    // inc by the difference, never set(); and from the first connection on even at a difference of 0: the series
    // must exist once used, also when the connection was over before the first scrape
    if (accepted > 0 || now !== reportedActive) metrics.connectionsActive.inc(labels, now - reportedActive)
    reportedActive = now
    if (accepted > 0) { metrics.connectionsTotal.inc(labels, accepted); accepted = 0 }
    if (up > 0) { metrics.bytesTotal.inc(upLabels, up); up = 0 }
    if (down > 0) { metrics.bytesTotal.inc(downLabels, down); down = 0 }
    for (const [outcome, n] of outcomes) metrics.connectionOutcomes.inc({ ...labels, outcome }, n)
    outcomes.clear()
  }

  return {
    accepted: () => { accepted += 1 },
    bytes: (direction, n) => { if (direction === 'up') up += n; else down += n },
    outcome: (outcome) => { outcomes.set(outcome, (outcomes.get(outcome) ?? 0) + 1) },
    attach: () => { metrics.beforeScrape.add(flush) },
    detach: () => {
      flush()
      metrics.beforeScrape.delete(flush)
    }
  }
}
