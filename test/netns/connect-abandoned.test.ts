/**
 * A client that goes away while the daemon is still connecting upstream: the upstream connect is abandoned at
 * once, not left to run to its timeout (10 s) with a descriptor and a SYN_SENT socket held for nobody. A
 * thousand impatient clients of a black-holed destination would otherwise hold a thousand of each.
 *
 * The destination drops every SYN to one port (nft in its namespace), so the daemon's connect stays pending;
 * a client in the client namespace opens its connection (an HTTP CONNECT to that port, or a plain TCP
 * connection to a dns-proxy forward to it), and resets it once the daemon's SYN_SENT socket is seen.
 */
import { type ChildProcess } from 'node:child_process'
import t, { type Test } from 'tap'
import { LAB, type Topology } from '../../src/lab/topology.js'
import { waitFor } from '../../src/lab/wait.js'
import { stopChild } from '../../src/lab/exec.js'
import { privileged } from '../helpers/privileged.js'
import { distMissing } from '../helpers/router-e2e.js'
import { proxyTopology, startProxy } from '../helpers/http-proxy-e2e.js'
import { dnsDaemon } from '../helpers/dns-proxy-e2e.js'

const missing = distMissing()
if (missing !== null) t.fail(missing)

const v4 = LAB.v4
/** the destination port whose SYNs are dropped */
const BLACK_HOLE = 81
/** the dns-proxy forward to it */
const FORWARD_PORT = 8181

/** The destination namespace drops every SYN to BLACK_HOLE (gone with the namespace). */
async function blackHole (topo: Topology): Promise<void> {
  const r = await topo.exec('dest', ['nft', '-f', '-'], {
    input: `table inet erblackhole {\n  chain in {\n    type filter hook input priority 0;\n    tcp dport ${BLACK_HOLE} drop\n  }\n}\n`,
    timeoutMs: 5_000
  })
  if (r.code !== 0) throw new Error(`nft in dest: ${r.stderr}`)
}

/** The daemon's connects still pending to the black hole, from the router namespace. */
async function synSent (topo: Topology): Promise<number> {
  const r = await topo.exec('router', ['ss', '-Htn', 'state', 'syn-sent', 'dst', `${v4.dest}:${BLACK_HOLE}`], { timeoutMs: 5_000 })
  return r.stdout.split('\n').filter((l) => l.trim() !== '').length
}

async function metric (topo: Topology, line: RegExp): Promise<number> {
  const r = await topo.exec('router', ['curl', '-sS', '--max-time', '3', 'http://127.0.0.1:9090/metrics'], { timeoutMs: 8_000 })
  const m = line.exec(r.stdout)
  return m === null ? 0 : Number(m[1])
}

/**
 * A client that connects to port, writes `send`, and resets its connection (RST, SO_LINGER 0) when told to on
 * stdin; it prints `connected` and `reset`. Stopped in t.teardown.
 */
function resettingClient (t: Test, topo: Topology, port: number, send: string): { child: ChildProcess, said: (word: string) => Promise<void> } {
  const script = `
    const net = require('node:net')
    const s = net.connect({ host: ${JSON.stringify(v4.routerPod)}, port: ${port} }, () => {
      s.write(${JSON.stringify(send)})
      process.stdout.write('connected\\n')
    })
    s.on('error', (e) => { process.stdout.write('error ' + e.code + '\\n') })
    process.stdin.once('data', () => { s.resetAndDestroy(); process.stdout.write('reset\\n'); setTimeout(() => process.exit(0), 200) })`
  const child = topo.spawn('client', [process.execPath, '-e', script], { stdio: ['pipe', 'pipe', 'pipe'], env: { PATH: process.env.PATH ?? '' } })
  t.teardown(async () => { await stopChild(child) })
  let out = ''
  child.stdout?.setEncoding('utf8').on('data', (s: string) => { out += s })
  const said = async (word: string): Promise<void> => {
    await waitFor(() => out.split('\n').includes(word), { what: `the client to say ${word} (said: ${JSON.stringify(out)})`, timeoutMs: 10_000, intervalMs: 20 })
  }
  return { child, said }
}

/** The client resets while the daemon's connect is pending: the SYN_SENT socket goes with it, long before the 10 s timeout. */
async function resetWhileConnecting (t: Test, topo: Topology, port: number, send: string): Promise<void> {
  const client = resettingClient(t, topo, port, send)
  await client.said('connected')
  await waitFor(async () => await synSent(topo) === 1, { what: 'the daemon to be connecting to the black hole', timeoutMs: 5_000, intervalMs: 50 })
  // still pending a moment later: the destination really drops it (no refusal that would end it by itself)
  await new Promise((resolve) => setTimeout(resolve, 500))
  t.equal(await synSent(topo), 1, 'the upstream connect is pending while the client waits')
  client.child.stdin?.write('go\n')
  await client.said('reset')
  const resetAt = Date.now()
  // 3 s: well under the daemon's 10 s connect timeout, so only abandoning the connect can pass
  await waitFor(async () => await synSent(topo) === 0, { what: 'the pending connect to be abandoned after the reset', timeoutMs: 3_000, intervalMs: 20 })
  t.pass(`abandoned ${Date.now() - resetAt} ms after the client's reset`)
}

t.test('http-proxy: a CONNECT client that resets while the upstream connect is pending', privileged(), async (t) => {
  const topo = await proxyTopology(t)
  await blackHole(topo)
  await startProxy(t, topo, `${v4.dest}\n`)
  await resetWhileConnecting(t, topo, 8080, `CONNECT ${v4.dest}:${BLACK_HOLE} HTTP/1.1\r\nHost: ${v4.dest}:${BLACK_HOLE}\r\n\r\n`)
  const outcome = (o: string): RegExp => new RegExp(`\\negress_router_connection_outcomes_total\\{mode="http-proxy",listener="8080",outcome="${o}"\\} (\\d+)`)
  await waitFor(async () => await metric(topo, outcome('aborted')) === 1, { what: 'the tunnel counted as aborted', timeoutMs: 5_000, intervalMs: 100 })
  t.equal(await metric(topo, outcome('timeout')), 0, 'not as a timeout')
  t.equal(await metric(topo, /\negress_router_connections_active\{mode="http-proxy",listener="8080"\} (\d+)/), 0, 'nothing left active')
})

t.test('dns-proxy: a client that resets while the forward\'s connect is pending', privileged(), async (t) => {
  const topo = await proxyTopology(t)
  await blackHole(topo)
  await dnsDaemon(t, topo, `${FORWARD_PORT} ${v4.dest} ${BLACK_HOLE}\n`)
  await resetWhileConnecting(t, topo, FORWARD_PORT, 'hello\n')
  const outcome = (o: string): RegExp => new RegExp(`\\negress_router_connection_outcomes_total\\{mode="dns-proxy",listener="${FORWARD_PORT}",outcome="${o}"\\} (\\d+)`)
  await waitFor(async () => await metric(topo, outcome('aborted')) === 1, { what: 'the connection counted as aborted', timeoutMs: 5_000, intervalMs: 100 })
  t.equal(await metric(topo, outcome('timeout')), 0, 'not as a timeout')
})
