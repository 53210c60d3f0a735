/**
 * Readiness, watched from the first moment: /readyz is polled in a tight loop from before the daemon starts. It
 * never answers 200 before the rules are in place and the listeners are open, its 503 body names what is
 * missing, and /healthz answers 200 early. In dns-proxy a forward to a name that does not resolve keeps /readyz
 * at 503, naming that name.
 */
import t from 'tap'
import { waitFor } from '../../src/lab/wait.js'
import { privileged } from '../helpers/privileged.js'
import { distMissing } from '../helpers/router-e2e.js'
import { DEST_NAME, health, metric, opsDaemon, opsEnv, opsTopology, pollHealth, scrape, v4, type ReadyzBody } from '../helpers/ops-e2e.js'

const missing = distMissing()
if (missing !== null) t.fail(missing)

t.test('http-proxy: /readyz turns 200 only after the rules line and the listener; until then 503 names what is missing', privileged(), async (t) => {
  const topo = await opsTopology(t)
  const poll = pollHealth(t, topo)
  // the poller must be asking before the daemon exists
  await waitFor(() => poll.answers.length >= 2, { what: 'the poller to have asked twice', timeoutMs: 10_000, intervalMs: 5 })
  const router = await opsDaemon(t, topo, opsEnv('http-proxy', { EGRESS_HTTP_PROXY_DESTINATION: `${v4.dest}\n` }), { ready: false })
  const answers = await poll.done
  const rules = await router.waitForLog((l) => l.event === 'rules', 'the rules line')
  const listening = await router.waitForLog((l) => l.event === 'listening', 'the listening line')
  const readyz = answers.filter((a) => a.path === '/readyz')
  const firstOk = readyz.find((a) => a.status === 200)
  if (firstOk === undefined) throw new Error(`/readyz never answered 200: ${JSON.stringify(readyz.slice(-3))}`)
  const setUp = Math.max(rules.time as number, listening.time as number)
  t.ok(readyz.filter((a) => a.status === 200).every((a) => a.t >= setUp), '/readyz never answered 200 before the rules line and the listening line')
  t.ok(readyz.some((a) => a.status === 0), 'the poller asked before the health listener existed (so it watched from the start)')

  const early = readyz.filter((a) => a.status === 503).map((a) => JSON.parse(a.body) as ReadyzBody)
  t.ok(early.length > 0, `/readyz answered 503 while setting up (${early.length} times)`)
  for (const body of early) {
    const failing = Object.entries(body.checks).filter(([, c]) => !c.ok)
    if (body.ready || failing.length === 0) { t.fail(`a 503 body must name what is missing: ${JSON.stringify(body)}`); break }
  }
  const first = early[0] as ReadyzBody
  t.equal(first.ready, false, 'the first 503 says ready: false')
  // the rules go in before the health listener opens (they need nothing else); the rest is still missing then
  for (const check of ['network', 'listeners']) t.equal(first.checks[check]?.ok, false, `the first 503 names "${check}" as missing (${JSON.stringify(first.checks[check])})`)
  const ok = JSON.parse(firstOk.body) as ReadyzBody
  t.ok(ok.ready && Object.values(ok.checks).every((c) => c.ok), `the 200 body: every check passed (${Object.keys(ok.checks).join(', ')})`)

  const healthEarly = answers.find((a) => a.path === '/healthz' && a.status === 200)
  t.ok(healthEarly !== undefined && healthEarly.t < firstOk.t, '/healthz answered 200 while /readyz still said 503')
  const readyLine = router.logs.find((l) => l.event === 'readiness' && l.ready === true)
  t.ok(readyLine !== undefined && (readyLine.time as number) >= setUp, 'the "ready" log line comes after the rules and listening lines')
})

t.test('dns-proxy: a forward to a name that does not resolve keeps /readyz at 503, naming it', privileged(), async (t) => {
  const topo = await opsTopology(t, { dns: true })
  const nx = 'nowhere.lab.example'
  const router = await opsDaemon(t, topo, opsEnv('dns-proxy', { EGRESS_DNS_PROXY_DESTINATION: `7000 ${DEST_NAME} 80\n7001 ${nx} 80\n` }), { ready: false })
  await router.waitForLog((l) => l.event === 'listening' && l.port === 7001, 'the listener of the forward to the name')
  // settled: everything else is up (the gateway answered, the other name resolved); only the unresolvable name is left
  const body = await waitFor(async () => {
    const r = await health(topo, '/readyz')
    if (r.status === 200) return { ready: true, checks: {} }
    if (r.status !== 503) return undefined
    const b = JSON.parse(r.body) as ReadyzBody
    const names = b.checks.names
    return names !== undefined && names.detail.includes(nx) && !names.detail.includes(DEST_NAME) && b.checks.gateway?.ok === true ? b : undefined
  }, { what: `/readyz to be down to the forward to ${nx}`, timeoutMs: 15_000, intervalMs: 50 })
  t.equal(body.ready, false, '/readyz: not ready')
  const failing = Object.entries(body.checks).filter(([, c]) => !c.ok).map(([name]) => name)
  t.same(failing, ['names'], 'only the names check fails: network, rules, listeners and gateway are fine')
  t.match(body.checks.names?.detail, nx, `the 503 body names ${nx}: ${JSON.stringify(body.checks.names)}`)
  // it stays so: the resolver tries again (the failure counter moves), fails again, and readiness does not flip
  const failures = async (): Promise<number> => metric(await scrape(topo), 'egress_router_dns_failures_total') ?? 0
  const before = await failures()
  await waitFor(async () => await failures() > before, { what: `the resolver to try ${nx} again and fail`, timeoutMs: 20_000, intervalMs: 100 })
  const again = await health(topo, '/readyz')
  t.equal(again.status, 503, `after the resolver tried ${nx} again: /readyz still 503`)
  t.match((JSON.parse(again.body) as ReadyzBody).checks.names?.detail, nx, 'still naming it')
  t.notOk(router.logs.some((l) => l.event === 'readiness' && l.ready === true), 'the daemon never logged "ready"')
})
