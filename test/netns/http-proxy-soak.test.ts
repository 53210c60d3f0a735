/**
 * Leak soak against the real daemon: thousands of requests — plain HTTP and CONNECT tunnels — to a
 * destination that streams a large body slowly, each client aborting mid-response (half with a FIN, half
 * with a RST). Afterwards the daemon must hold no more sockets than before (its open fds, and no TCP
 * connection left in the router namespace), the destination must have seen every upstream connection
 * closed, and the daemon's memory must not have grown with the request count.
 */
import t from 'tap'
import { LAB } from '../../src/lab/topology.js'
import { waitFor } from '../../src/lab/wait.js'
import { privileged } from '../helpers/privileged.js'
import { distMissing } from '../helpers/router-e2e.js'
import { fdCount, proxyClient, proxyHostPort, proxyTopology, rssKiB, startDest, startProxy } from '../helpers/http-proxy-e2e.js'

const missing = distMissing()
if (missing !== null) t.fail(missing)

const v4 = LAB.v4
const WARMUP = 1000
const SOAK = 2000
const CONCURRENCY = 50
/** bytes of the response a client reads before it aborts: several socket buffers' worth */
const ABORT_AFTER = 256 * 1024
/** a 1 GiB body at 64 KiB every 5 ms: no client ever sees its end */
const STREAM = `/stream?bytes=${1024 * 1024 * 1024}&chunk=65536&ms=5`
/** memory growth allowed for GC noise (measured: ±15 MiB around a plateau over 6 × 2000 requests); a per-request leak of 20 KiB × 2000 exceeds it */
const RSS_SLACK_KIB = 40 * 1024
/** requests to a destination that never answers, each client giving up after HANG_ABORT_MS */
const HANG = 600
const HANG_ABORT_MS = 200

interface SoakResult { started: number, aborted: number, statuses: Record<string, number>, errors: Record<string, number>, ms: number }

t.test(`${SOAK} requests whose clients abort mid-response leave no sockets or memory behind`, privileged(), async (t) => {
  const topo = await proxyTopology(t)
  const dest = await startDest(t, topo)
  const router = await startProxy(t, topo, `${v4.dest}\n`)
  const pid = router.child.pid as number
  const target = `${v4.dest}:${dest.port}`
  const rssStart = rssKiB(pid)

  const soak = async (count: number, path = STREAM, extra: string[] = []): Promise<SoakResult> => await proxyClient<SoakResult>(topo, ['--mode', 'soak', '--proxy', proxyHostPort(),
    '--target', target, '--path', path, '--count', String(count), '--concurrency', String(CONCURRENCY), '--abort-after', String(ABORT_AFTER), ...extra], 90_000)

  /** TCP connections of the router namespace that hold a socket (not listening, not TIME-WAIT). */
  const routerConnections = async (): Promise<string[]> => {
    const r = await topo.execOk('router', ['ss', '-Htn', 'state', 'connected', 'exclude', 'time-wait'])
    return r.stdout.split('\n').filter((l) => l.trim() !== '')
  }
  /** Waits until nothing of the aborted requests is open anywhere, and returns the daemon's fds then. */
  const settle = async (what: string): Promise<number> => {
    await waitFor(() => dest.openConnections() === 0, { what: `the destination to see every upstream connection closed (${what})`, timeoutMs: 20_000, intervalMs: 100 })
    await waitFor(async () => (await routerConnections()).length === 0, { what: `no TCP connection left in the router namespace (${what})`, timeoutMs: 20_000, intervalMs: 100 })
    return fdCount(pid)
  }

  // Warm up first, so that what is measured is steady state (JIT, pools, the first allocations).
  const warm = await soak(WARMUP)
  t.equal(warm.aborted, WARMUP, `warm-up: ${WARMUP} requests aborted mid-response`)
  const fdsBefore = await settle('warm-up')
  const rssBefore = rssKiB(pid)
  const responsesBefore = dest.events.filter((e) => e.event === 'response').length

  const result = await soak(SOAK)
  t.comment(`soak: ${JSON.stringify(result)}`)
  t.equal(result.started, SOAK, `all ${SOAK} requests were made`)
  t.equal(result.aborted, SOAK, 'every one got its response streaming and aborted mid-way')
  t.same(result.statuses, { 'http 200': SOAK / 2, 'connect 200': SOAK / 2 }, 'half plain HTTP, half CONNECT tunnels, all 200')
  t.same(result.errors, {}, 'no client saw an error before it aborted')

  const fdsAfter = await settle('soak')
  const cut = dest.events.slice().filter((e) => e.event === 'response').slice(responsesBefore)
  t.equal(cut.length, SOAK, 'the destination saw every response end')
  t.same(cut.filter((e) => e.event === 'response' && e.complete), [], 'and none of them complete: each was cut when its client went away')
  t.same(await routerConnections(), [], 'no TCP connection is left in the router namespace')

  const rssAfter = rssKiB(pid)
  t.comment(`daemon RSS when ready ${(rssStart / 1024).toFixed(1)} MiB, after the ${WARMUP} warm-up requests ${(rssBefore / 1024).toFixed(1)} MiB`)
  t.comment(`daemon pid ${pid}: open fds ${fdsBefore} → ${fdsAfter}; RSS ${(rssBefore / 1024).toFixed(1)} MiB → ${(rssAfter / 1024).toFixed(1)} MiB (${((rssAfter - rssBefore) / 1024).toFixed(1)} MiB) after ${SOAK} aborted requests in ${result.ms} ms`)
  t.ok(fdsAfter <= fdsBefore, `the daemon holds no more fds than before (${fdsBefore} → ${fdsAfter})`)
  t.ok(rssAfter - rssBefore < RSS_SLACK_KIB, `the daemon's RSS did not grow with the requests (${rssBefore} → ${rssAfter} KiB)`)

  // The way http-proxy leaked on Node ≥ 15.5: a client that gives up while the destination has not answered yet.
  const hung = await soak(HANG, '/hang', ['--abort-ms', String(HANG_ABORT_MS)])
  t.comment(`hang: ${JSON.stringify(hung)}`)
  t.same({ aborted: hung.aborted, statuses: hung.statuses, errors: hung.errors }, { aborted: HANG, statuses: { 'http 0': HANG / 2, 'connect 200': HANG / 2 }, errors: {} },
    `${HANG} clients gave up waiting for response headers (half of them inside a tunnel)`)
  const fdsHang = await settle('hang')
  // Under load the proxy may not have forwarded a request yet when its client gives up: then nothing goes out
  // at all, which is right too. Most do reach the destination, and those are what this phase is about.
  const reached = dest.requests('/hang').length
  t.ok(reached > 0, `the destination had the request of ${reached} of the ${HANG} clients in hand when they gave up`)
  t.ok(fdsHang <= fdsBefore, `the daemon holds no more fds than before (${fdsBefore} → ${fdsHang})`)
  t.comment(`after ${HANG} clients gave up on a silent destination: open fds ${fdsHang}, RSS ${(rssKiB(pid) / 1024).toFixed(1)} MiB`)

  const metrics = await topo.execOk('router', ['curl', '-sS', '--max-time', '5', 'http://127.0.0.1:9090/metrics'])
  const active = /^egress_router_connections_active\{[^}]*mode="http-proxy"[^}]*\} (\d+)$/m.exec(metrics.stdout)
  t.equal(active?.[1], '0', 'the daemon counts no active connection')
})

t.test('refused clients that never close their side do not hold connections', privileged(), async (t) => {
  const topo = await proxyTopology(t)
  const dest = await startDest(t, topo)
  const router = await startProxy(t, topo, `${v4.dest}\n`)
  const pid = router.child.pid as number
  const fdsBefore = fdCount(pid)
  const denied = `${v4.destExtra[1]}:${dest.port}`
  const HOLDERS = 50
  const HOLD_MS = 12_000
  const hold = async (request: string): Promise<{ statuses: Record<string, number>, serverEnded: number, reset: number }> =>
    await proxyClient(topo, ['--mode', 'hold', '--proxy', proxyHostPort(), '--data', Buffer.from(request).toString('base64'), '--connections', String(HOLDERS)], HOLD_MS)
  let holding = true
  const results = Promise.all([
    hold(`CONNECT ${denied} HTTP/1.1\r\nHost: ${denied}\r\n\r\n`),
    hold(`GET http://${denied}/ HTTP/1.1\r\nHost: ${denied}\r\n\r\n`)
  ]).finally(() => { holding = false })
  await waitFor(() => router.logs.filter((l) => l.msg === 'CONNECT refused' || l.msg === 'request refused').length === 2 * HOLDERS,
    { what: `the daemon to refuse all ${2 * HOLDERS} requests`, timeoutMs: 10_000 })
  // While every client still holds its side open, the daemon lets go of all of them.
  const fds = await waitFor(() => { const n = fdCount(pid); return n <= fdsBefore ? { n } : undefined },
    { what: `the daemon's open fds to come back to ${fdsBefore} while the clients hold on`, timeoutMs: HOLD_MS / 2, intervalMs: 100 }).then(({ n }) => n, () => fdCount(pid))
  t.ok(holding, 'measured while the clients were still holding their connections')
  t.ok(fds <= fdsBefore, `the daemon closed the refused connections (${fdsBefore} fds before, ${fds} now)`)
  const [connect, plain] = await results
  t.same(connect, { statuses: { 403: HOLDERS }, serverEnded: HOLDERS, reset: 0 }, 'each CONNECT client got its 403 and a clean end')
  t.same(plain, { statuses: { 403: HOLDERS }, serverEnded: HOLDERS, reset: 0 }, 'each GET client got its 403 and a clean end')
  t.same(dest.events.filter((e) => e.event === 'connection'), [], 'the destination saw nothing')
})
