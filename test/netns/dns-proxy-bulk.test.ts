/**
 * dns-proxy mode under bulk traffic: 1 GiB each way through a forward to a name, checked with sha256 at both
 * ends, while the daemon's resident memory is sampled from /proc. The downloading client stops reading for a
 * while half-way, so the destination keeps sending into a full pipe: without backpressure the daemon would
 * buffer what the destination sends; with it, TCP flow control holds the destination back.
 */
import t from 'tap'
import { LAB } from '../../src/lab/topology.js'
import { waitFor } from '../../src/lab/wait.js'
import { distMissing } from '../helpers/router-e2e.js'
import { startPeerServer, type PeerReport } from '../helpers/peers.js'
import { privileged } from '../helpers/privileged.js'
import { dnsDaemon, dnsTopology, rssBytes, startDnsmasq, streamClient } from '../helpers/dns-proxy-e2e.js'

const missing = distMissing()
if (missing !== null) t.fail(missing)

const v4 = LAB.v4
const GiB = 1024 * 1024 * 1024
const MiB = 1024 * 1024
/** How much the daemon's RSS may grow while 2 GiB pass through it. */
const RSS_BOUND = 100 * MiB

const mib = (n: number): string => `${(n / MiB).toFixed(1)} MiB`

t.test('1 GiB each way through a forward arrives intact and the daemon\'s memory stays flat', privileged(), async (t) => {
  const topo = await dnsTopology(t)
  const sink = await startPeerServer(topo, { host: v4.dest, tcp: { mode: 'sink' } })
  t.teardown(sink.stop)
  const source = await startPeerServer(topo, { host: v4.dest, tcp: { mode: { send: GiB } } })
  t.teardown(source.stop)
  await startDnsmasq(t, topo, { 'bulk.lab.example': [v4.dest] })
  const router = await dnsDaemon(t, topo, `8000 bulk.lab.example ${sink.tcpPort as number}\n8001 bulk.lab.example ${source.tcpPort as number}`)
  const pid = router.child.pid as number
  t.match((await topo.execOk('router', ['cat', `/proc/${pid}/cmdline`])).stdout, /egress-router/, 'the sampled pid is the daemon itself (ip netns exec execs node)')

  // Warm up: the first relay allocates the socket buffers and JIT-compiles the hot path; measure after that.
  const warm = streamClient(t, topo, { host: v4.routerPod, port: 8000, sendBytes: 64 * MiB })
  t.ok((await warm.result).ok, 'a warm-up transfer went through')
  const baseline = rssBytes(pid)
  if (baseline === null) throw new Error(`cannot read /proc/${pid}/status`)

  let peak = baseline
  let samples = 0
  const sampler = setInterval(() => {
    const rss = rssBytes(pid)
    if (rss === null) return
    samples += 1
    if (rss > peak) peak = rss
  }, 50)
  t.teardown(() => { clearInterval(sampler) })

  const up = streamClient(t, topo, { host: v4.routerPod, port: 8000, sendBytes: GiB, timeoutMs: 180_000 })
  const down = streamClient(t, topo, { host: v4.routerPod, port: 8001, pauseAfter: 256 * MiB, pauseMs: 3_000, timeoutMs: 180_000 })
  const [u, d] = await Promise.all([up.result, down.result])
  clearInterval(sampler)
  const growth = peak - baseline
  t.comment(`daemon RSS: baseline ${mib(baseline)}, peak ${mib(peak)}, growth ${mib(growth)} (${samples} samples); upload ${u.ms} ms, download ${d.ms} ms (3 s of it paused)`)

  t.ok(u.ok, `upload completed: ${JSON.stringify(u.error ?? null)}`)
  t.ok(d.ok, `download completed: ${JSON.stringify(d.error ?? null)}`)
  t.equal(u.sent.bytes, GiB, 'the client sent 1 GiB')
  t.equal(d.received.bytes, GiB, 'the client received 1 GiB')
  const upGreeting = await up.greeting
  const downGreeting = await down.greeting
  t.equal(upGreeting.peer.split(':')[0], v4.source, 'the upload\'s destination saw EGRESS_SOURCE')
  t.equal(downGreeting.peer.split(':')[0], v4.source, 'the download\'s destination saw EGRESS_SOURCE')

  const closedFor = async (server: typeof sink, peer: string): Promise<PeerReport & { event: 'closed' }> =>
    await server.waitForReport<PeerReport & { event: 'closed' }>((r) => r.event === 'closed' && r.peer === peer, { what: `the destination's close report for ${peer}`, timeoutMs: 10_000 })
      .catch((err: Error) => { throw new Error(`${err.message}; the destination reported: ${JSON.stringify(server.reports)}`, { cause: err }) })
  const upClosed = await closedFor(sink, upGreeting.peer)
  const downClosed = await closedFor(source, downGreeting.peer)
  t.same(upClosed.received, u.sent, 'upload: the destination received exactly what the client sent (bytes, sha256)')
  t.same(downClosed.sent, d.received, 'download: the client received exactly what the destination sent (bytes, sha256)')
  t.equal(upClosed.error, undefined, 'upload: closed cleanly at the destination')
  t.equal(downClosed.error, undefined, 'download: closed cleanly at the destination')

  t.ok(samples >= 10, `RSS was sampled during the transfer (${samples} samples)`)
  t.ok(growth < RSS_BOUND, `the daemon's RSS grew by ${mib(growth)} < ${mib(RSS_BOUND)} while 2 GiB went through`)
  await waitFor(() => router.child.exitCode === null, { what: 'the daemon to still be running', timeoutMs: 1_000 })
})
