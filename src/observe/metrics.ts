/**
 * Prometheus metrics (prom-client), one registry per daemon so tests can run several in one process.
 * Label values are bounded: mode, forward port, outcome, rule line — never client addresses.
 */
import type { MetricObjectWithValues, MetricValue } from 'prom-client'
import { AggregatorRegistry, Counter, Gauge, Registry } from './prom.js'
import { registerDefaultMetrics } from './default-metrics.js'
import { runMirrors } from './mirrors.js'

export type Outcome = 'ok' | 'denied' | 'refused' | 'timeout' | 'unresolved' | 'error' | 'bad-request' | 'aborted'

export interface Metrics {
  readonly registry: Registry
  /** connections accepted by a listener; labels: mode (http-proxy|dns-proxy), listener (the listen port: "8080", "5432") */
  readonly connectionsTotal: Counter<'mode' | 'listener'>
  readonly connectionsActive: Gauge<'mode' | 'listener'>
  /** finished connections / requests / tunnels by outcome */
  readonly connectionOutcomes: Counter<'mode' | 'listener' | 'outcome'>
  /** bytes relayed; direction: upstream (client → destination) or downstream */
  readonly bytesTotal: Counter<'mode' | 'listener' | 'direction'>
  /** ACL decisions; rule = the rule's line number ("default" for the implicit deny) */
  readonly aclDecisions: Counter<'action' | 'rule'>
  readonly dnsQueries: Counter<'type'>
  readonly dnsAnswers: Counter<'rcode'>
  readonly dnsFailures: Counter<'reason'>
  readonly dnsCacheEntries: Gauge<'state'>
  readonly reconcileRuns: Counter<'what'>
  readonly reconcileRepairs: Counter<'what'>
  readonly setupSeconds: Gauge<string>
  /** EGRESS_WORKERS > 1: worker processes by state (running: listeners open; starting) */
  readonly workers: Gauge<'state'>
  /** workers that exited while the daemon was serving (each was replaced) */
  readonly workerRestarts: Counter<string>
  readonly ready: Gauge<string>
  /**
   * Run before every scrape: mirrors of counters kept elsewhere (the DNS client's statistics) sync here, so a
   * scrape always sees the current values rather than the last periodic copy.
   */
  readonly beforeScrape: Set<() => void>
}

export function createMetrics (opts: { defaultMetrics?: boolean } = {}): Metrics {
  const registry = new Registry()
  if (opts.defaultMetrics !== false) registerDefaultMetrics(registry, 'egress_router_')
  const r = [registry]
  const beforeScrape = new Set<() => void>()
  // Reading a connection or ACL metric (a scrape, or get() in a test) first brings the counts the proxies
  // keep in plain numbers on their hot paths (src/proxy/connection-counters.ts) into prom-client.
  const collect = (): void => { runMirrors(beforeScrape) }
  return {
    registry,
    connectionsTotal: new Counter({ name: 'egress_router_connections_total', help: 'Connections accepted', labelNames: ['mode', 'listener'], registers: r, collect }),
    connectionsActive: new Gauge({ name: 'egress_router_connections_active', help: 'Connections open now', labelNames: ['mode', 'listener'], registers: r, collect }),
    connectionOutcomes: new Counter({ name: 'egress_router_connection_outcomes_total', help: 'Finished connections, requests and tunnels by outcome', labelNames: ['mode', 'listener', 'outcome'], registers: r, collect }),
    bytesTotal: new Counter({ name: 'egress_router_bytes_total', help: 'Bytes relayed, by direction', labelNames: ['mode', 'listener', 'direction'], registers: r, collect }),
    aclDecisions: new Counter({ name: 'egress_router_acl_decisions_total', help: 'HTTP proxy ACL decisions by rule line', labelNames: ['action', 'rule'], registers: r, collect }),
    dnsQueries: new Counter({ name: 'egress_router_dns_queries_total', help: 'DNS queries sent', labelNames: ['type'], registers: r }),
    dnsAnswers: new Counter({ name: 'egress_router_dns_answers_total', help: 'DNS answers received by rcode', labelNames: ['rcode'], registers: r }),
    dnsFailures: new Counter({ name: 'egress_router_dns_failures_total', help: 'DNS lookups that failed (timeouts, SERVFAIL)', labelNames: ['reason'], registers: r }),
    dnsCacheEntries: new Gauge({ name: 'egress_router_dns_cache_entries', help: 'DNS cache entries by state', labelNames: ['state'], registers: r }),
    reconcileRuns: new Counter({ name: 'egress_router_reconcile_runs_total', help: 'Reconcile checks run', labelNames: ['what'], registers: r }),
    reconcileRepairs: new Counter({ name: 'egress_router_reconcile_repairs_total', help: 'Drifts found and repaired', labelNames: ['what'], registers: r }),
    setupSeconds: new Gauge({ name: 'egress_router_setup_seconds', help: 'Time from process start to rules in place', registers: r }),
    workers: new Gauge({ name: 'egress_router_workers', help: 'Worker processes (EGRESS_WORKERS) by state', labelNames: ['state'], registers: r }),
    workerRestarts: new Counter({ name: 'egress_router_worker_restarts_total', help: 'Workers that exited while serving and were replaced', registers: r }),
    ready: new Gauge({ name: 'egress_router_ready', help: '1 when /readyz is ok', registers: r }),
    beforeScrape
  }
}

/**
 * The primary's metrics and its workers' as one scrape: counters and gauges of the same name and labels are
 * summed (connections, bytes, DNS), the default process metrics by their own rules (prom-client's
 * aggregators: memory and CPU add up over the processes).
 */
export async function aggregateText (metrics: Metrics, workers: ReadonlyArray<Array<MetricObjectWithValues<MetricValue<string>>>>): Promise<string> {
  const own = await metrics.registry.getMetricsAsJSON()
  return await AggregatorRegistry.aggregate([own, ...workers]).metrics()
}
