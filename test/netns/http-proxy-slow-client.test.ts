/**
 * Slowloris against the real daemon: clients that send their request headers one byte a second are dropped
 * at the header timeout, while the proxy keeps serving everyone else.
 *
 * The daemon's header timeout is 30 s and has no configuration knob (SPEC: no new environment variable),
 * so this runs against the default: the slow clients are bounded at 40 s, which they reach only if the
 * proxy never drops them. Runtime about 31 s.
 */
import t from 'tap'
import { LAB } from '../../src/lab/topology.js'
import { waitFor } from '../../src/lab/wait.js'
import { privileged } from '../helpers/privileged.js'
import { distMissing } from '../helpers/router-e2e.js'
import { PROXY_PORT, curl, fdCount, peerHost, proxyClient, proxyHostPort, proxyTopology, startDest, startProxy } from '../helpers/http-proxy-e2e.js'

const missing = distMissing()
if (missing !== null) t.fail(missing)

const v4 = LAB.v4
/** DEFAULT_LIMITS.headersTimeoutMs of src/proxy/http-proxy.ts */
const HEADER_TIMEOUT_MS = 30_000
/** how long a slow client keeps sending before it gives up on being dropped */
const SLOW_CLIENT_BOUND_MS = 40_000
const SLOW_CLIENTS = 10

interface SlowResult { sent: number, total: number, ms: number, status: number, closed: string }

t.test('clients sending headers one byte a second are dropped at the header timeout; others are served meanwhile', privileged(), async (t) => {
  const topo = await proxyTopology(t)
  const dest = await startDest(t, topo)
  const router = await startProxy(t, topo, `${v4.dest}\n`)
  const pid = router.child.pid as number
  const fdsBefore = fdCount(pid)
  const P = dest.port

  // Longer than the bound at one byte a second: only the proxy can end it in time.
  const head = `GET http://${v4.dest}:${P}/slow HTTP/1.1\r\nHost: ${v4.dest}:${P}\r\n`
  const request = head + `X-Slow: ${'a'.repeat(Math.max(0, SLOW_CLIENT_BOUND_MS / 1000 + 20 - head.length))}\r\n\r\n`
  const started = Date.now()
  let slowDone = false
  const slow = proxyClient<SlowResult[]>(topo, ['--mode', 'slow', '--proxy', proxyHostPort(), '--data', Buffer.from(request).toString('base64'),
    '--interval', '1000', '--connections', String(SLOW_CLIENTS)], SLOW_CLIENT_BOUND_MS).finally(() => { slowDone = true })

  // Everyone else, meanwhile: one request about every second (bounded), each must be served.
  // Counted as established connections to the proxy port, not as the daemon's fds: a descriptor it had
  // open at start (a start-up child's pipe) may close meanwhile and hide one of them.
  const proxyConnections = async (): Promise<number> => {
    const r = await topo.execOk('router', ['ss', '-Htn', 'state', 'established', `( sport = :${PROXY_PORT} )`])
    return r.stdout.split('\n').filter((l) => l.trim() !== '').length
  }
  await waitFor(async () => (await proxyConnections()) >= SLOW_CLIENTS,
    { what: `the ${SLOW_CLIENTS} slow clients to be connected to the daemon`, timeoutMs: 10_000 })
  const served: number[] = []
  let meanwhile = 0
  for (let i = 0; i < 60 && !slowDone; i++) {
    const r = await curl(topo, { url: `http://${v4.dest}:${P}/meanwhile-${i}` })
    served.push(r.status)
    if (!slowDone) meanwhile++
    // Pace the loop: wait up to a second for the slow clients to finish.
    await waitFor(() => slowDone, { what: 'the slow clients', timeoutMs: 1_000, intervalMs: 50 }).catch(() => undefined)
  }
  const results = await slow
  const elapsed = Date.now() - started
  t.comment(`slow clients ended after ${results.map((r) => r.ms).join(', ')} ms; ${meanwhile} requests served meanwhile; runtime ${elapsed} ms`)

  t.ok(meanwhile >= 10, `other clients were served while the slow ones were connected (${meanwhile} requests)`)
  t.same(served.filter((s) => s !== 200), [], 'every one of them got 200')
  t.equal(results.length, SLOW_CLIENTS)
  for (const [i, r] of results.entries()) {
    t.ok(r.closed === 'fin' || r.closed === 'reset', `slow client ${i}: the proxy closed the connection (${r.closed})`)
    t.ok(r.sent < r.total, `slow client ${i}: before its headers were complete (${r.sent} of ${r.total} bytes)`)
    t.equal(r.status, 408, `slow client ${i}: with 408 Request Timeout`)
    // A lower bound only: the proxy must not cut a client before the timeout it promises.
    t.ok(r.ms >= HEADER_TIMEOUT_MS - 1_000, `slow client ${i}: not before the header timeout (${r.ms} ms)`)
  }
  const logged = router.logs.filter((l) => l.msg === 'malformed or slow request' && l.code === 'ERR_HTTP_REQUEST_TIMEOUT')
  t.equal(logged.length, SLOW_CLIENTS, 'the daemon logged each one as a slow request')
  t.same(dest.requests('/slow'), [], 'no slow request reached the destination')
  t.same(dest.events.filter((e) => 'peer' in e && peerHost(e.peer) !== v4.source), [], 'the destination saw only EGRESS_SOURCE')
  // Nothing of them stays behind (the served clients' upstream sockets may idle in the pool for a while).
  const fds = await waitFor(() => { const n = fdCount(pid); return n <= fdsBefore + 1 ? { n } : undefined },
    { what: `the daemon's open fds to come back to ${fdsBefore}`, timeoutMs: 10_000, intervalMs: 100 }).then(({ n }) => n, () => fdCount(pid))
  t.ok(fds <= fdsBefore + 1, `the daemon's open fds came back (${fdsBefore} before, ${fds} after)`)
})
