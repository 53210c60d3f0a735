import t from 'tap'
import { createMetrics } from '../../../src/observe/metrics.js'
import { connectionCounters } from '../../../src/proxy/connection-counters.js'

const labels = { mode: 'dns-proxy', listener: '7000' }

async function values (metrics: ReturnType<typeof createMetrics>): Promise<Record<string, number>> {
  const out: Record<string, number> = {}
  for (const m of await metrics.registry.getMetricsAsJSON()) {
    for (const v of m.values) out[`${m.name}${JSON.stringify(v.labels)}`] = v.value
  }
  return out
}

t.test('counts reach prom-client at each read, the active gauge by difference, and a last time on detach', async t => {
  const metrics = createMetrics({ defaultMetrics: false })
  let open = 0
  const c = connectionCounters(metrics, labels, () => open)
  c.attach()
  c.accepted(); open = 1
  c.bytes('up', 100); c.bytes('down', 7); c.bytes('up', 5)
  let v = await values(metrics)
  t.equal(v['egress_router_connections_total{"mode":"dns-proxy","listener":"7000"}'], 1)
  t.equal(v['egress_router_connections_active{"mode":"dns-proxy","listener":"7000"}'], 1)
  t.equal(v['egress_router_bytes_total{"mode":"dns-proxy","listener":"7000","direction":"upstream"}'], 105)
  t.equal(v['egress_router_bytes_total{"mode":"dns-proxy","listener":"7000","direction":"downstream"}'], 7)

  c.outcome('ok'); open = 0
  c.accepted(); c.outcome('refused')
  v = await values(metrics)
  t.equal(v['egress_router_connections_total{"mode":"dns-proxy","listener":"7000"}'], 2, 'counters add up across reads')
  t.equal(v['egress_router_connections_active{"mode":"dns-proxy","listener":"7000"}'], 0)
  t.equal(v['egress_router_connection_outcomes_total{"mode":"dns-proxy","listener":"7000","outcome":"ok"}'], 1)
  t.equal(v['egress_router_connection_outcomes_total{"mode":"dns-proxy","listener":"7000","outcome":"refused"}'], 1)

  // another listener with the same labels (the same port on another host) shares the gauge
  let otherOpen = 2
  const other = connectionCounters(metrics, labels, () => otherOpen)
  other.attach(); other.accepted(); other.accepted()
  v = await values(metrics)
  t.equal(v['egress_router_connections_active{"mode":"dns-proxy","listener":"7000"}'], 2, 'each adds its own difference')

  c.bytes('down', 3)
  c.detach()
  otherOpen = 0
  other.detach()
  c.bytes('down', 1000)
  v = await values(metrics)
  t.equal(v['egress_router_bytes_total{"mode":"dns-proxy","listener":"7000","direction":"downstream"}'], 10, 'detach flushed what was pending, and nothing after')
  t.equal(v['egress_router_connections_active{"mode":"dns-proxy","listener":"7000"}'], 0)
})

t.test('a connection over before the first read still makes the active series exist, at 0', async t => {
  const metrics = createMetrics({ defaultMetrics: false })
  const c = connectionCounters(metrics, labels, () => 0)
  c.attach()
  c.accepted(); c.outcome('ok')
  const v = await values(metrics)
  t.equal(v['egress_router_connections_active{"mode":"dns-proxy","listener":"7000"}'], 0)
})
