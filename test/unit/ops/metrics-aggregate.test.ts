import t from 'tap'
import { aggregateText, createMetrics } from '../../../src/observe/metrics.js'

/** "name{labels} value" lines of one metric, the labels in name order */
function lines (text: string, name: string): string[] {
  return text.split('\n').filter((l) => l.startsWith(`${name}{`) || l.startsWith(`${name} `))
    .map((l) => l.replace(/\{([^}]*)\}/, (_m, labels: string) => `{${labels.split(',').sort().join(',')}}`))
}

t.test('aggregateText: the workers\' counters and gauges add up per label set; the primary\'s own ones stay', async t => {
  const primary = createMetrics({ defaultMetrics: false })
  const a = createMetrics({ defaultMetrics: false })
  const b = createMetrics({ defaultMetrics: false })
  primary.ready.set(1)
  primary.reconcileRuns.inc({ what: 'nft' }, 3)
  a.connectionsTotal.inc({ mode: 'dns-proxy', listener: '5432' }, 5)
  b.connectionsTotal.inc({ mode: 'dns-proxy', listener: '5432' }, 7)
  b.connectionsTotal.inc({ mode: 'dns-proxy', listener: '53' }, 1)
  a.connectionsActive.set({ mode: 'dns-proxy', listener: '5432' }, 2)
  b.connectionsActive.set({ mode: 'dns-proxy', listener: '5432' }, 3)
  const text = await aggregateText(primary, [await a.registry.getMetricsAsJSON(), await b.registry.getMetricsAsJSON()])
  t.same(lines(text, 'egress_router_connections_total').sort(), [
    'egress_router_connections_total{listener="53",mode="dns-proxy"} 1',
    'egress_router_connections_total{listener="5432",mode="dns-proxy"} 12'
  ].sort())
  t.same(lines(text, 'egress_router_connections_active'), ['egress_router_connections_active{listener="5432",mode="dns-proxy"} 5'])
  t.same(lines(text, 'egress_router_ready'), ['egress_router_ready 1'], 'the workers\' unset gauges add nothing')
  t.same(lines(text, 'egress_router_reconcile_runs_total'), ['egress_router_reconcile_runs_total{what="nft"} 3'])
  t.match(text, /# HELP egress_router_connections_total Connections accepted/, 'help text kept')
})

t.test('aggregateText with no workers answering is the primary\'s registry alone', async t => {
  const primary = createMetrics({ defaultMetrics: false })
  primary.setupSeconds.set(0.12)
  t.same(lines(await aggregateText(primary, []), 'egress_router_setup_seconds'), ['egress_router_setup_seconds 0.12'])
})
