/**
 * SIGTERM drains, for real: a long, rate-limited upload is in flight through each mode when SIGTERM arrives. It
 * finishes within EGRESS_DRAIN_TIMEOUT with matching checksums, new connections are refused meanwhile, and the
 * daemon exits 0. A transfer longer than the drain timeout is cut at the deadline, and the exit is still 0.
 */
import t, { type Test } from 'tap'
import type { RouterProcess } from '../../src/lab/router-process.js'
import type { Topology } from '../../src/lab/topology.js'
import { waitFor } from '../../src/lab/wait.js'
import { privileged } from '../helpers/privileged.js'
import { startPeerServer, tcpRequest, type PeerReport, type PeerServer } from '../helpers/peers.js'
import { distMissing, leftovers } from '../helpers/router-e2e.js'
import { opsDaemon, opsEnv, opsTopology, startTransfer, v4, type Transfer } from '../helpers/ops-e2e.js'

const missing = distMissing()
if (missing !== null) t.fail(missing)

const MiB = 1024 * 1024
/** 64 MiB at 16 MiB/s: about 4 s, well inside a 10 s drain, and surely still running when SIGTERM comes. */
const SIZE = 64 * MiB
const RATE = 16 * MiB
/** the same size at 4 MiB/s (16 s) against a 2 s drain: cut at the deadline */
const SLOW_RATE = 4 * MiB

async function sink (t: Test, topo: Topology): Promise<PeerServer> {
  const server = await startPeerServer(topo, { host: v4.dest, tcp: { mode: 'sink' } })
  t.teardown(server.stop)
  return server
}

/** The server's record of the transfer: what it received, checksummed. */
async function received (server: PeerServer): Promise<Extract<PeerReport, { event: 'closed' }>> {
  return await server.waitForReport<Extract<PeerReport, { event: 'closed' }>>((r) => r.event === 'closed', { what: 'the sink to close the transfer', timeoutMs: 20_000 })
}

/** New connections to host:port are refused (a reset), checked until the deadline while the drain runs. */
async function refusedWhileDraining (t: Test, topo: Topology, port: number, transfer: Transfer): Promise<void> {
  const seen = await waitFor(async () => {
    const r = await tcpRequest(topo, { host: v4.routerPod, port, timeoutMs: 2_000 })
    return !r.ok && r.error.code === 'ECONNREFUSED' ? r : undefined
  }, { what: `new connections to ${v4.routerPod}:${port} to be refused`, timeoutMs: 8_000, intervalMs: 50 })
  t.equal(seen.ok, false, `a new connection to ${v4.routerPod}:${port} during the drain is refused (ECONNREFUSED)`)
  t.notOk(transfer.events.some((e) => e.event === 'done'), 'the refusal came while the transfer was still running')
}

async function drainsToTheEnd (t: Test, router: RouterProcess, server: PeerServer, transfer: Transfer, opts: { refusedPort: number | null, topo: Topology }): Promise<void> {
  await transfer.waitFor('started')
  const stopping = router.stop('SIGTERM', 30_000)
  await router.waitForLog((l) => l.event === 'stop', 'the stop line')
  if (opts.refusedPort !== null) await refusedWhileDraining(t, opts.topo, opts.refusedPort, transfer)
  const done = await transfer.done
  t.ok(done.ok, `the transfer finished during the drain (${JSON.stringify(done.error)})`)
  t.equal(done.sent.bytes, SIZE, 'every byte was sent')
  const closed = await received(server)
  t.same(closed.received, done.sent, 'the destination received exactly what was sent (sha256)')
  t.same(await stopping, { code: 0, signal: null }, 'SIGTERM: exit 0 after the drain')
  // The signal went to the whole process group (as Ctrl-C does): nothing of ours may read that as a failure.
  t.same(router.logs.filter((l) => l.event === 'nft-monitor'), [], 'no "nft change events are down" warning during the drain')
}

async function cutAtDeadline (t: Test, router: RouterProcess, transfer: Transfer): Promise<void> {
  await transfer.waitFor('started')
  const exit = await router.stop('SIGTERM', 30_000)
  t.same(exit, { code: 0, signal: null }, 'a drain that runs out of time still exits 0')
  const done = await transfer.done
  t.equal(done.ok, false, `the transfer that outlived the drain was cut (${String(done.error)}, ${done.sent.bytes} of ${SIZE} bytes sent)`)
  t.ok(done.sent.bytes < SIZE, 'it was cut before its end')
}

t.test('http-proxy: a CONNECT tunnel finishes during the drain; new connections are refused', privileged(), async (t) => {
  const topo = await opsTopology(t)
  const server = await sink(t, topo)
  const router = await opsDaemon(t, topo, opsEnv('http-proxy', { EGRESS_HTTP_PROXY_DESTINATION: `${v4.dest}\n` }))
  const transfer = startTransfer(t, topo, { host: v4.routerPod, port: 8080, proxy: `${v4.routerPod}:8080`, target: `${v4.dest}:${server.tcpPort as number}`, bytes: SIZE, rate: RATE })
  await drainsToTheEnd(t, router, server, transfer, { refusedPort: 8080, topo })
})

t.test('dns-proxy: a forwarded connection finishes during the drain; new connections are refused', privileged(), async (t) => {
  const topo = await opsTopology(t)
  const server = await sink(t, topo)
  const router = await opsDaemon(t, topo, opsEnv('dns-proxy', { EGRESS_DNS_PROXY_DESTINATION: `7000 ${v4.dest} ${server.tcpPort as number}\n` }))
  const transfer = startTransfer(t, topo, { host: v4.routerPod, port: 7000, bytes: SIZE, rate: RATE })
  await drainsToTheEnd(t, router, server, transfer, { refusedPort: 7000, topo })
})

t.test('redirect, pod routing: the rules outlive the process, so an in-flight flow just continues', privileged(), async (t) => {
  const topo = await opsTopology(t)
  const server = await sink(t, topo)
  const port = server.tcpPort as number
  const router = await opsDaemon(t, topo, opsEnv('redirect', { EGRESS_DESTINATION: `${port} tcp ${v4.dest}\n` }))
  const transfer = startTransfer(t, topo, { host: v4.routerPod, port, bytes: SIZE, rate: RATE })
  await transfer.waitFor('started')
  t.same(await router.stop('SIGTERM', 30_000), { code: 0, signal: null }, 'SIGTERM: exit 0')
  t.notOk(transfer.events.some((e) => e.event === 'done'), 'the daemon was gone while the transfer still ran')
  const done = await transfer.done
  t.ok(done.ok, `the transfer finished after the daemon exited (${String(done.error)})`)
  t.same((await received(server)).received, done.sent, 'the destination received exactly what was sent (sha256)')
})

t.test('redirect, host routing: SIGTERM waits for the redirected flows, refusing new ones, then removes everything', privileged(), async (t) => {
  const topo = await opsTopology(t)
  const server = await sink(t, topo)
  const port = server.tcpPort as number
  const router = await opsDaemon(t, topo, opsEnv('redirect', { EGRESS_ROUTING: 'host', EGRESS_DESTINATION: `${port} tcp ${v4.dest}\n` }))
  const transfer = startTransfer(t, topo, { host: v4.routerPod, port, bytes: SIZE, rate: RATE })
  await drainsToTheEnd(t, router, server, transfer, { refusedPort: port, topo })
  const waited = router.logs.find((l) => l.event === 'drain' && typeof l.flows === 'number' && l.flows > 0)
  t.ok(waited, `the daemon said it waited for the redirected flow: ${JSON.stringify(waited)}`)
  t.same(await leftovers(topo), [], 'then nothing of the daemon is left')
})

t.test('dns-proxy kernel forwarding, host routing: SIGTERM waits for the kernel-forwarded flows as redirect mode does, then removes everything', privileged(), async (t) => {
  const topo = await opsTopology(t)
  const server = await sink(t, topo)
  const port = server.tcpPort as number
  const router = await opsDaemon(t, topo, opsEnv('dns-proxy', { EGRESS_ROUTING: 'host', EGRESS_DNS_PROXY_DESTINATION: `${port} ${v4.dest}\n`, EGRESS_DNS_PROXY_FORWARDING: 'kernel' }))
  const transfer = startTransfer(t, topo, { host: v4.routerPod, port, bytes: SIZE, rate: RATE })
  await drainsToTheEnd(t, router, server, transfer, { refusedPort: port, topo })
  const waited = router.logs.find((l) => l.event === 'drain' && typeof l.flows === 'number' && l.flows > 0)
  t.ok(waited, `the daemon said it waited for the kernel-forwarded flow: ${JSON.stringify(waited)}`)
  t.same(await leftovers(topo), [], 'then nothing of the daemon is left')
})

t.test('http-proxy: a tunnel longer than the drain timeout is cut at the deadline', privileged(), async (t) => {
  const topo = await opsTopology(t)
  const server = await sink(t, topo)
  const router = await opsDaemon(t, topo, opsEnv('http-proxy', { EGRESS_HTTP_PROXY_DESTINATION: `${v4.dest}\n`, EGRESS_DRAIN_TIMEOUT: '2s' }))
  const transfer = startTransfer(t, topo, { host: v4.routerPod, port: 8080, proxy: `${v4.routerPod}:8080`, target: `${v4.dest}:${server.tcpPort as number}`, bytes: SIZE, rate: SLOW_RATE })
  await cutAtDeadline(t, router, transfer)
})

t.test('dns-proxy: a connection longer than the drain timeout is cut at the deadline', privileged(), async (t) => {
  const topo = await opsTopology(t)
  const server = await sink(t, topo)
  const router = await opsDaemon(t, topo, opsEnv('dns-proxy', { EGRESS_DNS_PROXY_DESTINATION: `7000 ${v4.dest} ${server.tcpPort as number}\n`, EGRESS_DRAIN_TIMEOUT: '2s' }))
  const transfer = startTransfer(t, topo, { host: v4.routerPod, port: 7000, bytes: SIZE, rate: SLOW_RATE })
  await cutAtDeadline(t, router, transfer)
})

t.test('redirect, host routing: a flow longer than the drain timeout is cut at the deadline, then everything is removed', privileged(), async (t) => {
  const topo = await opsTopology(t)
  const server = await sink(t, topo)
  const port = server.tcpPort as number
  const router = await opsDaemon(t, topo, opsEnv('redirect', { EGRESS_ROUTING: 'host', EGRESS_DESTINATION: `${port} tcp ${v4.dest}\n`, EGRESS_DRAIN_TIMEOUT: '2s' }))
  const transfer = startTransfer(t, topo, { host: v4.routerPod, port, bytes: SIZE, rate: SLOW_RATE, timeoutMs: 30_000 })
  await cutAtDeadline(t, router, transfer)
  const cut = router.logs.find((l) => l.event === 'cleanup' && l.what === 'nft')
  t.ok(typeof cut?.flowsDeleted === 'number' && cut.flowsDeleted > 0, `the cut flow's conntrack entry was deleted: ${JSON.stringify(cut)}`)
  t.same(await leftovers(topo), [], 'nothing of the daemon is left')
})
