/**
 * What the operations end-to-end tests share (test/netns/ops-*.test.ts): their own topology prefix, dnsmasq on
 * the LAN, the router's environment per mode, the health listener seen from inside the router namespace, a real
 * Prometheus text parser, and long checksummed transfers (test/fixtures/ops/transfer.mjs) and UDP flows
 * (udp-ping.mjs) run from the client namespace.
 */
import type { ChildProcess } from 'node:child_process'
import { writeFileSync } from 'node:fs'
import { fileURLToPath } from 'node:url'
import type { Test } from 'tap'
import { createInterface } from 'node:readline'
import { startRouter, type LogLine, type RouterProcess } from '../../src/lab/router-process.js'
import { buildTopology, LAB, type NsRole, type Topology, type TopologyOptions } from '../../src/lab/topology.js'
import { waitFor } from '../../src/lab/wait.js'
import type { PeerReport, PeerServer } from './peers.js'

export const PREFIX = 'eropse2e-'
export const v4 = LAB.v4
/** names the LAN's dnsmasq answers */
export const DEST_NAME = 'dest.lab.example'
export const OTHER_NAME = 'other.lab.example'

const TRANSFER = fileURLToPath(new URL('../fixtures/ops/transfer.mjs', import.meta.url))
const UDP_PING = fileURLToPath(new URL('../fixtures/ops/udp-ping.mjs', import.meta.url))
const POLL_HEALTH = fileURLToPath(new URL('../fixtures/ops/poll-health.mjs', import.meta.url))

/** Fixtures are plain .mjs: keep tap's loaders (NODE_OPTIONS) out of them. */
export function fixtureEnv (): NodeJS.ProcessEnv {
  const env = { ...process.env }
  delete env.NODE_OPTIONS
  return env
}

/** A topology with this suite's prefix; dns: the router resolves through dnsmasq on the gateway. */
export async function opsTopology (t: Test, opts: Omit<TopologyOptions, 'prefix' | 'dnsResolvConf'> & { dns?: boolean } = {}): Promise<Topology> {
  const { dns, ...rest } = opts
  const topo = await buildTopology({ ...rest, prefix: PREFIX, dnsResolvConf: dns === true ? `nameserver ${v4.gateway}\noptions timeout:1 attempts:2\n` : undefined })
  t.teardown(topo.destroy)
  if (dns === true) await startDnsmasq(topo)
  return topo
}

/** dnsmasq on the gateway, answering for the lab names only (never forwarding anywhere); stopped by destroy(). */
async function startDnsmasq (topo: Topology): Promise<void> {
  topo.spawn('lan', ['dnsmasq', '--keep-in-foreground', '--no-resolv', '--no-hosts', '--no-poll', '--bind-interfaces',
    `--listen-address=${v4.gateway}`, '--port=53', `--host-record=${DEST_NAME},${v4.dest}`, `--host-record=${OTHER_NAME},${v4.destExtra[0]}`,
    '--local-ttl=5', '--pid-file=', '--user=root', '--log-facility=-'], { stdio: ['ignore', 'ignore', 'ignore'] })
  await waitFor(async () => (await topo.exec('lan', ['sh', '-c', `ss -Hlun 'sport = :53' | grep -q ${v4.gateway}`])).code === 0,
    { what: 'dnsmasq to listen on the gateway', timeoutMs: 10_000, intervalMs: 50 })
}

/** The router's environment for a mode on the topology: what an operator would write in the pod spec. */
export function opsEnv (mode: 'redirect' | 'http-proxy' | 'dns-proxy', extra: Record<string, string>): Record<string, string> {
  return {
    EGRESS_ROUTER_MODE: mode,
    EGRESS_SOURCE: `${v4.source}/${v4.prefixLength}`,
    EGRESS_GATEWAY: v4.gateway,
    EGRESS_INTERFACE: LAB.links.routerLan,
    EGRESS_POD_INTERFACE: LAB.links.routerPod,
    EGRESS_HEALTH_ADDRESS: ':9090',
    EGRESS_DRAIN_TIMEOUT: '10s',
    ...extra
  }
}

/** Starts the daemon (SIGTERM in t.teardown, SIGKILL if it hangs); waits for ready unless told not to. */
export async function opsDaemon (t: Test, topo: Topology, env: Record<string, string>, opts: { ready?: boolean } = {}): Promise<RouterProcess> {
  const router = startRouter(topo, env)
  t.teardown(async () => { await router.stop('SIGTERM', 15_000) })
  if (opts.ready !== false) await router.waitReady(20_000)
  return router
}

/** A file the daemon reads (`EGRESS_*_FILE`); rewritten for SIGHUP. */
export function configFile (t: Test, name: string, text: string): { path: string, write: (text: string) => void } {
  const dir = t.testdir({})
  const path = `${dir}/${name}`
  writeFileSync(path, text)
  return { path, write: (next) => { writeFileSync(path, next) } }
}

// ---------------------------------------------------------------------------------------------
// The health listener, from inside the router namespace

export interface HealthAnswer { status: number, body: string }

/** Equivalent to: ip netns exec ROUTER curl -s http://127.0.0.1:9090/PATH — status 0 when nothing answered. */
export async function health (topo: Topology, path: string): Promise<HealthAnswer> {
  const r = await topo.exec('router', ['curl', '-sS', '--max-time', '3', '-w', '\n%{http_code}', `http://127.0.0.1:9090${path}`], { timeoutMs: 8_000 })
  const cut = r.stdout.lastIndexOf('\n')
  return { status: cut < 0 ? 0 : Number(r.stdout.slice(cut + 1)) || 0, body: cut < 0 ? r.stdout : r.stdout.slice(0, cut) }
}

export interface ReadyzBody { ready: boolean, checks: Record<string, { ok: boolean, detail: string }> }

export interface PolledAnswer { t: number, path: '/readyz' | '/healthz', status: number, body: string }

/**
 * Polls /readyz and /healthz in turn from inside the router namespace, as fast as they answer, until /readyz said
 * 200 three times (or 20 s). Start it before the daemon: it records everything from the first moment.
 */
export function pollHealth (t: Test, topo: Topology): { answers: PolledAnswer[], done: Promise<PolledAnswer[]> } {
  const child = topo.spawn('router', [process.execPath, POLL_HEALTH, '--base', 'http://127.0.0.1:9090', '--max-ms', '20000', '--ready-times', '3'], { env: fixtureEnv() })
  t.teardown(() => { child.kill('SIGKILL') })
  const answers: PolledAnswer[] = []
  if (child.stdout !== null) createInterface({ input: child.stdout }).on('line', (l) => { answers.push(JSON.parse(l) as PolledAnswer) })
  const done = new Promise<PolledAnswer[]>((resolve) => child.once('close', () => { setImmediate(() => resolve(answers)) }))
  return { answers, done }
}

// ---------------------------------------------------------------------------------------------
// Prometheus text

export interface Sample { name: string, labels: Record<string, string>, value: number }

/** Parses the Prometheus text exposition format (0.0.4): comments skipped, label values unescaped. */
export function parsePrometheus (text: string): Sample[] {
  const out: Sample[] = []
  for (const raw of text.split('\n')) {
    const line = raw.trim()
    if (line === '' || line.startsWith('#')) continue
    const m = /^([a-zA-Z_:][a-zA-Z0-9_:]*)/.exec(line)
    if (m === null) throw new Error(`not a sample line: ${line}`)
    const name = m[1] as string
    let i = name.length
    const labels: Record<string, string> = {}
    if (line[i] === '{') {
      i++
      while (line[i] !== '}') {
        const lm = /^\s*([a-zA-Z_][a-zA-Z0-9_]*)="/.exec(line.slice(i))
        if (lm === null) throw new Error(`bad label at ${i}: ${line}`)
        i += lm[0].length
        let value = ''
        while (line[i] !== '"') {
          if (i >= line.length) throw new Error(`unterminated label value: ${line}`)
          if (line[i] === '\\') {
            const e = line[i + 1]
            value += e === 'n' ? '\n' : (e as string)
            i += 2
          } else {
            value += line[i]
            i++
          }
        }
        i++
        labels[lm[1] as string] = value
        if (line[i] === ',') i++
      }
      i++
    }
    const rest = line.slice(i).trim().split(/\s+/)
    const v = rest[0] as string
    const value = v === '+Inf' ? Infinity : v === '-Inf' ? -Infinity : Number(v)
    if (v === undefined || (Number.isNaN(value) && v !== 'NaN')) throw new Error(`bad value: ${line}`)
    out.push({ name, labels, value })
  }
  return out
}

/** Sum of the samples of `name` whose labels include `labels`; null when there is none. */
export function metric (samples: readonly Sample[], name: string, labels: Record<string, string> = {}): number | null {
  const hits = samples.filter((s) => s.name === name && Object.entries(labels).every(([k, v]) => s.labels[k] === v))
  return hits.length === 0 ? null : hits.reduce((a, s) => a + s.value, 0)
}

export async function scrape (topo: Topology): Promise<Sample[]> {
  const r = await health(topo, '/metrics')
  if (r.status !== 200) throw new Error(`/metrics answered ${r.status}: ${r.body}`)
  return parsePrometheus(r.body)
}

// ---------------------------------------------------------------------------------------------
// Long transfers and UDP flows from the client namespace

export type TransferEvent =
  | { event: 'connected' }
  | { event: 'started', sent: number }
  | { event: 'done', ok: boolean, sent: { bytes: number, sha256: string }, received: { bytes: number, sha256: string } | null, error: string | null }

export interface Transfer {
  readonly events: TransferEvent[]
  /** resolves with the first event of that kind (rejects at the deadline or when the client ended without it) */
  waitFor: <E extends TransferEvent['event']>(event: E, timeoutMs?: number) => Promise<Extract<TransferEvent, { event: E }>>
  /** the final `done` event */
  readonly done: Promise<Extract<TransferEvent, { event: 'done' }>>
  readonly child: ChildProcess
}

/**
 * Uploads `bytes` random bytes at most `rate` bytes/s to a peer-server in sink mode, directly (host:port) or through
 * an HTTP proxy's CONNECT (proxy + target). The client is killed in t.teardown.
 */
export function startTransfer (t: Test, topo: Topology, o: { host: string, port: number, proxy?: string, target?: string, bytes: number, rate?: number, timeoutMs?: number, ns?: NsRole }): Transfer {
  const argv = [process.execPath, TRANSFER, '--host', o.host, '--port', String(o.port), '--bytes', String(o.bytes), '--rate', String(o.rate ?? 0), '--timeout', String(o.timeoutMs ?? 60_000)]
  if (o.proxy !== undefined) argv.push('--proxy', o.proxy, '--target', o.target as string)
  const child = topo.spawn(o.ns ?? 'client', argv, { env: fixtureEnv() })
  t.teardown(() => { child.kill('SIGKILL') })
  const events: TransferEvent[] = []
  let stderr = ''
  child.stderr?.on('data', (b: Buffer) => { stderr += b.toString() })
  let closed = false
  const ended = new Promise<void>((resolve) => child.once('close', () => { closed = true; resolve() }))
  if (child.stdout !== null) createInterface({ input: child.stdout }).on('line', (l) => { events.push(JSON.parse(l) as TransferEvent) })
  const waitEvent = async <E extends TransferEvent['event']>(event: E, timeoutMs = 30_000): Promise<Extract<TransferEvent, { event: E }>> => {
    const found = await waitFor(() => events.find((e) => e.event === event) ?? (closed ? 'closed' as const : undefined),
      { what: `transfer event ${event}`, timeoutMs, intervalMs: 10 })
    if (found === 'closed') {
      await ended
      const late = events.find((e) => e.event === event)
      if (late !== undefined) return late as Extract<TransferEvent, { event: E }>
      throw new Error(`transfer ended without ${event}: ${JSON.stringify(events)} ${stderr.trim()}`)
    }
    return found as Extract<TransferEvent, { event: E }>
  }
  return { events, waitFor: waitEvent, done: waitEvent('done', (o.timeoutMs ?? 60_000) + 10_000), child }
}

export interface UdpFlow {
  readonly answers: Array<{ seq: number, reply: { local?: string, peer?: string } }>
  readonly child: ChildProcess
}

/** Keeps one UDP flow alive from the client namespace: a datagram every 100 ms from one local port. */
export function startUdpFlow (t: Test, topo: Topology, host: string, port: number): UdpFlow {
  const child = topo.spawn('client', [process.execPath, UDP_PING, '--host', host, '--port', String(port), '--interval', '100', '--count', '600'], { env: fixtureEnv() })
  t.teardown(() => { child.kill('SIGKILL') })
  const answers: UdpFlow['answers'] = []
  if (child.stdout !== null) {
    createInterface({ input: child.stdout }).on('line', (l) => {
      const e = JSON.parse(l) as { event: string, seq: number, reply: { local?: string, peer?: string } }
      if (e.event === 'answer') answers.push({ seq: e.seq, reply: e.reply })
    })
  }
  return { answers, child }
}

/** Sends SIGHUP and waits for the daemon's verdict: the `reloaded` line, or the rejection / failure line. */
export async function reload (router: RouterProcess, expect: 'reloaded' | 'reload-rejected' = 'reloaded'): Promise<LogLine> {
  const seen = router.logs.length
  process.kill(router.child.pid as number, 'SIGHUP')
  return await router.waitForLog((l) => router.logs.indexOf(l) >= seen && (l.event === 'reloaded' || l.event === 'reload-rejected' || l.event === 'reload-failed'), `the reload (${expect})`)
}

/** A transfer that was in flight across a reload finished, and its sink received all `size` bytes, sha256 matching. */
export async function survives (t: Test, transfer: Transfer, sink: PeerServer, what: string, size: number): Promise<void> {
  const done = await transfer.done
  t.ok(done.ok, `${what}: the transfer in flight across the reload finished (${String(done.error)})`)
  const closed = await sink.waitForReport<Extract<PeerReport, { event: 'closed' }>>((r) => r.event === 'closed' && r.received.sha256 === done.sent.sha256, { what: `${what}: the sink's record`, timeoutMs: 10_000 })
  t.equal(closed.received.bytes, size, `${what}: the destination received all ${size} bytes, sha256 matching`)
}

/** A new 64 KiB connection through the router's port works (`works` says so) and `sink` receives it (sha256 matching). */
export async function reaches (t: Test, topo: Topology, port: number, sink: PeerServer, works: string, what: string): Promise<void> {
  const done = await startTransfer(t, topo, { host: v4.routerPod, port, bytes: 64 * 1024 }).done
  t.ok(done.ok, works)
  await sink.waitForReport((r) => r.event === 'closed' && r.received.sha256 === done.sent.sha256, { what })
}
