/**
 * /metrics (Prometheus text, parsed properly) before and after real traffic in each mode: connections, bytes in
 * both directions, ACL decisions by rule line, DNS queries, reconcile runs and repairs after someone flushes the
 * ruleset, setup seconds, the ready gauge.
 */
import t from 'tap'
import { waitFor } from '../../src/lab/wait.js'
import { privileged } from '../helpers/privileged.js'
import { httpGet, startPeerServer } from '../helpers/peers.js'
import { distMissing } from '../helpers/router-e2e.js'
import { DEST_NAME, metric, opsDaemon, opsEnv, opsTopology, scrape, startTransfer, v4, type Sample } from '../helpers/ops-e2e.js'

const missing = distMissing()
if (missing !== null) t.fail(missing)

const MiB = 1024 * 1024

function delta (before: Sample[], after: Sample[], name: string, labels: Record<string, string> = {}): number {
  return (metric(after, name, labels) ?? 0) - (metric(before, name, labels) ?? 0)
}

t.test('http-proxy: connections, bytes both ways and ACL decisions by rule line follow the traffic', privileged(), async (t) => {
  const topo = await opsTopology(t)
  const web = await startPeerServer(topo, { host: v4.dest, http: true })
  t.teardown(web.stop)
  const sink = await startPeerServer(topo, { host: v4.dest, tcp: { mode: 'sink' } })
  t.teardown(sink.stop)
  const denied = v4.destExtra[1]
  // line 1 denies .12, line 2 allows the destination, anything else falls to the implicit deny
  await opsDaemon(t, topo, opsEnv('http-proxy', { EGRESS_HTTP_PROXY_DESTINATION: `!${denied}\n${v4.dest}\n` }))
  const proxy = `http://${v4.routerPod}:8080`
  const before = await scrape(topo)
  t.equal(metric(before, 'egress_router_ready'), 1, 'egress_router_ready is 1')
  t.ok((metric(before, 'egress_router_setup_seconds') ?? 0) > 0, `egress_router_setup_seconds is set (${String(metric(before, 'egress_router_setup_seconds'))})`)

  const ok = await httpGet(topo, { url: `http://${v4.dest}:${web.httpPort as number}/hello`, proxy })
  t.equal(ok.status, 200, 'an allowed GET: 200')
  t.equal((await httpGet(topo, { url: `http://${denied}:${web.httpPort as number}/`, proxy })).status, 403, 'a GET denied by line 1: 403')
  t.equal((await httpGet(topo, { url: `http://${v4.destExtra[0]}:${web.httpPort as number}/`, proxy })).status, 403, 'a GET to an unlisted address: 403')
  const up = startTransfer(t, topo, { host: v4.routerPod, port: 8080, proxy: `${v4.routerPod}:8080`, target: `${v4.dest}:${sink.tcpPort as number}`, bytes: MiB })
  t.ok((await up.done).ok, 'a 1 MiB upload through a CONNECT tunnel arrived intact')

  // the tunnel's bytes are counted when it closes: wait for the counters rather than for time
  const labels = { mode: 'http-proxy', listener: '8080' }
  const after = await waitFor(async () => {
    const s = await scrape(topo)
    return delta(before, s, 'egress_router_bytes_total', { ...labels, direction: 'upstream' }) >= MiB ? s : undefined
  }, { what: 'the upload in egress_router_bytes_total', timeoutMs: 10_000, intervalMs: 100 })
  t.equal(delta(before, after, 'egress_router_connections_total', labels), 4, 'egress_router_connections_total: +4 (three GETs, one CONNECT)')
  const upBytes = delta(before, after, 'egress_router_bytes_total', { ...labels, direction: 'upstream' })
  t.ok(upBytes >= MiB && upBytes < MiB + 4096, `bytes upstream: +${upBytes} (the 1 MiB upload)`)
  const downBytes = delta(before, after, 'egress_router_bytes_total', { ...labels, direction: 'downstream' })
  t.ok(downBytes >= Buffer.byteLength(ok.body), `bytes downstream: +${downBytes} (the GET's answer, the sink's greeting and summary)`)
  t.equal(delta(before, after, 'egress_router_acl_decisions_total', { action: 'allow', rule: '2' }), 2, 'ACL allow by line 2: +2 (the GET and the CONNECT)')
  t.equal(delta(before, after, 'egress_router_acl_decisions_total', { action: 'deny', rule: '1' }), 1, 'ACL deny by line 1: +1')
  t.equal(delta(before, after, 'egress_router_acl_decisions_total', { action: 'deny', rule: 'default' }), 1, 'ACL deny by the implicit default: +1')
  t.equal(delta(before, after, 'egress_router_connection_outcomes_total', { ...labels, outcome: 'denied' }), 2, 'outcomes: denied +2')
})

t.test('dns-proxy: connections, bytes both ways and DNS queries follow the traffic', privileged(), async (t) => {
  const topo = await opsTopology(t, { dns: true })
  const sink = await startPeerServer(topo, { host: v4.dest, tcp: { mode: 'sink' } })
  t.teardown(sink.stop)
  await opsDaemon(t, topo, opsEnv('dns-proxy', { EGRESS_DNS_PROXY_DESTINATION: `7000 ${DEST_NAME} ${sink.tcpPort as number}\n` }))
  const before = await scrape(topo)
  t.equal(metric(before, 'egress_router_ready'), 1, 'egress_router_ready is 1')
  t.ok((metric(before, 'egress_router_dns_queries_total') ?? 0) > 0, `egress_router_dns_queries_total counts the lookup of ${DEST_NAME} (${String(metric(before, 'egress_router_dns_queries_total'))})`)
  t.ok((metric(before, 'egress_router_dns_answers_total') ?? 0) > 0, 'and its answer')
  const up = startTransfer(t, topo, { host: v4.routerPod, port: 7000, bytes: 2 * MiB })
  t.ok((await up.done).ok, 'a 2 MiB upload through the forward arrived intact')
  const labels = { mode: 'dns-proxy', listener: '7000' }
  const after = await waitFor(async () => {
    const s = await scrape(topo)
    return delta(before, s, 'egress_router_connection_outcomes_total', labels) >= 1 ? s : undefined
  }, { what: 'the connection to be counted as finished', timeoutMs: 10_000, intervalMs: 100 })
  t.equal(delta(before, after, 'egress_router_connections_total', labels), 1, 'egress_router_connections_total: +1')
  t.equal(delta(before, after, 'egress_router_bytes_total', { ...labels, direction: 'upstream' }), 2 * MiB, 'bytes upstream: exactly the 2 MiB upload')
  const down = delta(before, after, 'egress_router_bytes_total', { ...labels, direction: 'downstream' })
  t.ok(down > 0 && down < 4096, `bytes downstream: +${down} (the sink's greeting and summary)`)
  t.equal(delta(before, after, 'egress_router_connection_outcomes_total', { ...labels, outcome: 'ok' }), 1, 'outcome ok: +1')
  t.equal(metric(after, 'egress_router_connections_active', labels), 0, 'no connection active any more')
  // the name is watched: its TTL (5 s) runs out and it is asked again, which the counter shows at the next scrape
  const q = metric(after, 'egress_router_dns_queries_total') ?? 0
  await waitFor(async () => (metric(await scrape(topo), 'egress_router_dns_queries_total') ?? 0) > q, { what: `a refresh of ${DEST_NAME} in egress_router_dns_queries_total`, timeoutMs: 15_000, intervalMs: 200 })
  t.pass('the re-resolution of the watched name shows in egress_router_dns_queries_total')
})

t.test('redirect: reconcile runs tick, a flushed ruleset counts as a repair, setup seconds and the ready gauge', privileged(), async (t) => {
  const topo = await opsTopology(t)
  const router = await opsDaemon(t, topo, opsEnv('redirect', { EGRESS_DESTINATION: `80 tcp ${v4.dest}\n` }))
  const before = await scrape(topo)
  t.equal(metric(before, 'egress_router_ready'), 1, 'egress_router_ready is 1')
  const setup = metric(before, 'egress_router_setup_seconds') ?? 0
  const rules = router.logs.find((l) => l.event === 'rules')
  t.ok(setup > 0 && Math.abs(setup * 1000 - (rules?.setupMs as number)) <= 1, `egress_router_setup_seconds (${setup}) is the setupMs of the rules line (${String(rules?.setupMs)})`)
  t.equal(metric(before, 'egress_router_reconcile_repairs_total', { what: 'nft' }) ?? 0, 0, 'no nft repair yet')
  const runs = metric(before, 'egress_router_reconcile_runs_total', { what: 'nft' }) ?? 0
  await waitFor(async () => (metric(await scrape(topo), 'egress_router_reconcile_runs_total', { what: 'nft' }) ?? 0) > runs, { what: 'another reconcile run', timeoutMs: 10_000, intervalMs: 100 })
  t.pass('egress_router_reconcile_runs_total{what="nft"} moves on its own')

  await topo.execOk('router', ['nft', 'flush', 'ruleset'])
  await router.waitForLog((l) => l.event === 'repaired' && l.what === 'nft', 'the repair')
  const after = await waitFor(async () => {
    const s = await scrape(topo)
    return (metric(s, 'egress_router_reconcile_repairs_total', { what: 'nft' }) ?? 0) >= 1 ? s : undefined
  }, { what: 'the repair in the metrics', timeoutMs: 10_000, intervalMs: 100 })
  t.equal(metric(after, 'egress_router_reconcile_repairs_total', { what: 'nft' }), 1, 'egress_router_reconcile_repairs_total{what="nft"}: 1 after `nft flush ruleset`')
  t.equal(metric(after, 'egress_router_ready'), 1, 'still ready')
  const listed = await topo.execOk('router', ['nft', 'list', 'table', 'ip', 'egress_router'])
  t.match(listed.stdout, /dnat to 203\.0\.113\.10:80/, 'and the rules are back')
})
