/**
 * Per-connection debug logs (EGRESS_LOG_LEVEL=debug): when a connection ends, one JSON event says who (client),
 * where to (destination), how much (bytes both ways), how long (duration) and how it ended (outcome) — in
 * http-proxy (CONNECT tunnels and plain HTTP requests) and dns-proxy. Asserted as parsed JSON lines.
 */
import t, { type Test } from 'tap'
import type { LogLine, RouterProcess } from '../../src/lab/router-process.js'
import { privileged } from '../helpers/privileged.js'
import { httpGet, startPeerServer } from '../helpers/peers.js'
import { distMissing } from '../helpers/router-e2e.js'
import { opsDaemon, opsEnv, opsTopology, startTransfer, v4 } from '../helpers/ops-e2e.js'

const missing = distMissing()
if (missing !== null) t.fail(missing)

const SIZE = 256 * 1024
const DEBUG = 20

/** The fields a per-connection event must carry, whatever the component calls them. */
interface ConnectionEvent { client: string, destination: string, up: number, down: number, durationMs: number, outcome: string }

function asConnectionEvent (l: LogLine): ConnectionEvent | null {
  const pick = (...keys: string[]): unknown => keys.map((k) => l[k]).find((v) => v !== undefined && v !== null)
  const client = pick('client')
  const destination = pick('destination', 'target')
  const up = pick('up', 'upstreamBytes', 'bytesUp')
  const down = pick('down', 'downstreamBytes', 'bytesDown')
  const durationMs = pick('durationMs', 'duration')
  const outcome = pick('outcome')
  if (typeof client !== 'string' || typeof destination !== 'string' || typeof up !== 'number' || typeof down !== 'number' || typeof outcome !== 'string') return null
  if (typeof durationMs !== 'number') return null
  return { client, destination, up, down, durationMs, outcome }
}

/** Every debug line that describes a finished connection from the client. */
function connectionEvents (router: RouterProcess): ConnectionEvent[] {
  return router.logs.filter((l) => l.level === DEBUG && typeof l.client === 'string' && l.client.includes(v4.client) && 'outcome' in l)
    .map((l) => asConnectionEvent(l) ?? { client: String(l.client), destination: '(missing)', up: -1, down: -1, durationMs: -1, outcome: `(incomplete: ${JSON.stringify(l)})` })
}

function checkEvent (t: Test, e: ConnectionEvent | undefined, want: { destination: string, up: number }): void {
  if (e === undefined) { t.fail('no per-connection debug event'); return }
  t.match(e.client, v4.client, `client: ${e.client}`)
  t.match(e.destination, want.destination, `destination: ${e.destination}`)
  t.ok(e.up >= want.up, `bytes up: ${e.up} (≥ ${want.up})`)
  t.ok(e.down > 0, `bytes down: ${e.down}`)
  t.ok(e.durationMs >= 0, `duration: ${e.durationMs} ms`)
  t.equal(e.outcome, 'ok', 'outcome: ok')
}

t.test('dns-proxy: one debug event per connection, with client, destination, bytes, duration, outcome', privileged(), async (t) => {
  const topo = await opsTopology(t)
  const sink = await startPeerServer(topo, { host: v4.dest, tcp: { mode: 'sink' } })
  t.teardown(sink.stop)
  const router = await opsDaemon(t, topo, opsEnv('dns-proxy', { EGRESS_DNS_PROXY_DESTINATION: `7000 ${v4.dest} ${sink.tcpPort as number}\n`, EGRESS_LOG_LEVEL: 'debug' }))
  for (let i = 0; i < 2; i++) t.ok((await startTransfer(t, topo, { host: v4.routerPod, port: 7000, bytes: SIZE }).done).ok, `connection ${i + 1} carried ${SIZE} bytes`)
  await router.waitForLog((l) => connectionEvents(router).length >= 2 && l.level === DEBUG, 'two connection events')
  const events = connectionEvents(router)
  t.equal(events.length, 2, 'exactly one event per connection')
  for (const e of events) checkEvent(t, e, { destination: `${v4.dest}:${sink.tcpPort as number}`, up: SIZE })
})

t.test('http-proxy: one debug event per CONNECT tunnel and per request, with client, destination, bytes, duration, outcome', privileged(), async (t) => {
  const topo = await opsTopology(t)
  const sink = await startPeerServer(topo, { host: v4.dest, tcp: { mode: 'sink' } })
  t.teardown(sink.stop)
  const web = await startPeerServer(topo, { host: v4.dest, http: true })
  t.teardown(web.stop)
  const router = await opsDaemon(t, topo, opsEnv('http-proxy', { EGRESS_HTTP_PROXY_DESTINATION: `${v4.dest}\n`, EGRESS_LOG_LEVEL: 'debug' }))
  t.ok((await startTransfer(t, topo, { host: v4.routerPod, port: 8080, proxy: `${v4.routerPod}:8080`, target: `${v4.dest}:${sink.tcpPort as number}`, bytes: SIZE }).done).ok, `a tunnel carried ${SIZE} bytes`)
  t.equal((await httpGet(topo, { url: `http://${v4.dest}:${web.httpPort as number}/x`, proxy: `http://${v4.routerPod}:8080` })).status, 200, 'a plain GET')
  await router.waitForLog((l) => l.level === DEBUG && connectionEvents(router).length >= 2, 'the tunnel event and the request event')
  const events = connectionEvents(router)
  t.equal(events.length, 2, `one event for the tunnel, one for the request: ${JSON.stringify(events)}`)
  const tunnel = router.logs.find((l) => l.level === DEBUG && l.msg === 'tunnel closed')
  checkEvent(t, tunnel === undefined ? undefined : asConnectionEvent(tunnel) ?? undefined, { destination: `${v4.dest}:${sink.tcpPort as number}`, up: SIZE })
  checkEvent(t, events.find((e) => e.destination.includes(String(web.httpPort))), { destination: `${v4.dest}:${web.httpPort as number}`, up: 0 })
})
