/**
 * What the dns-proxy end-to-end tests share: the lab topology with the router's resolv.conf pointing at a
 * real dnsmasq in the LAN namespace (answering from an addn-hosts file the test rewrites, reloaded with
 * SIGHUP), the real daemon in dns-proxy mode, destination servers on every destination address, and a
 * streaming client that hashes both directions without keeping them.
 *
 *   const topo = await dnsTopology(t)
 *   const dns = await startDnsmasq(t, topo, { 'svc.lab.example': [LAB.v4.dest] })
 *   const router = await dnsDaemon(t, topo, '8000 svc.lab.example 80')
 */
import { type ChildProcess } from 'node:child_process'
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { createInterface } from 'node:readline'
import { fileURLToPath } from 'node:url'
import type { Test } from 'tap'
import { stopChild } from '../../src/lab/exec.js'
import { startRouter, type RouterProcess } from '../../src/lab/router-process.js'
import { buildTopology, LAB, type Topology } from '../../src/lab/topology.js'
import { waitFor } from '../../src/lab/wait.js'
import { hostOf, startPeerServer, tcpRequest, type ClientResult, type PeerServer, type TcpMode } from './peers.js'

/** Network-namespace prefix of these tests (parallel test files must not collide). */
export const PREFIX = 'erdnse2e-'
export const STREAM_CLIENT = fileURLToPath(new URL('../fixtures/dns-proxy/stream-client.mjs', import.meta.url))
const v4 = LAB.v4

/** The lab topology, the router's /etc/resolv.conf naming the LAN's dnsmasq; destroyed in t.teardown. */
export async function dnsTopology (t: Test): Promise<Topology> {
  const topo = await buildTopology({ prefix: PREFIX, dnsResolvConf: `nameserver ${v4.gateway}\noptions timeout:1 attempts:2\n` })
  t.teardown(topo.destroy)
  return topo
}

export type Hosts = Record<string, readonly string[]>

export interface Dnsmasq {
  readonly child: ChildProcess
  /** Rewrites the hosts file and has dnsmasq re-read it (SIGHUP); resolves once dnsmasq answers from it. */
  setHosts: (hosts: Hosts) => Promise<void>
  /** SIGTERM; resolves once it has exited. Idempotent. */
  stop: () => Promise<void>
}

function hostsText (hosts: Hosts): string {
  return Object.entries(hosts).flatMap(([name, addrs]) => addrs.map((a) => `${a} ${name}\n`)).join('')
}

/**
 * dnsmasq in the LAN namespace on EGRESS_GATEWAY:53, authoritative for lab.example (unknown names there get
 * NXDOMAIN, nothing is forwarded anywhere), answering from an addn-hosts file with TTL `ttlSec`.
 */
export async function startDnsmasq (t: Test, topo: Topology, hosts: Hosts, opts: { ttlSec?: number } = {}): Promise<Dnsmasq> {
  const dir = mkdtempSync(join(tmpdir(), 'erdnse2e-'))
  t.teardown(() => { rmSync(dir, { recursive: true, force: true }) })
  const file = join(dir, 'hosts')
  writeFileSync(file, hostsText(hosts))
  const child = topo.spawn('lan', ['dnsmasq', '--keep-in-foreground', '--no-resolv', '--no-hosts', '--no-poll', '--bind-interfaces',
    `--listen-address=${v4.gateway}`, '--port=53', `--addn-hosts=${file}`, `--local-ttl=${opts.ttlSec ?? 1}`, '--local=/lab.example/',
    '--pid-file=', '--user=root', '--log-facility=-', '--log-queries'], { stdio: ['ignore', 'pipe', 'pipe'] })
  let log = ''
  let reloads = 0
  for (const stream of [child.stdout, child.stderr]) {
    if (stream === null) continue
    createInterface({ input: stream }).on('line', (line) => {
      log += line + '\n'
      if (/read \S+ - \d+ (names?|addresses)/.test(line)) reloads += 1
    })
  }
  let stopping: Promise<void> | undefined
  const stop = async (): Promise<void> => { stopping ??= stopChild(child); await stopping }
  t.teardown(stop)
  const exited = (): boolean => child.exitCode !== null || child.signalCode !== null
  await waitFor(async () => {
    if (exited()) return 'exited'
    const r = await topo.exec('lan', ['ss', '-Hlun', 'src', `${v4.gateway}:53`])
    return r.stdout.trim() !== '' && reloads > 0 ? 'up' : undefined
  }, { what: 'dnsmasq to listen on 53 and read its hosts file', timeoutMs: 10_000, intervalMs: 50 }).then((s) => {
    if (s === 'exited') throw new Error(`dnsmasq exited (${String(child.exitCode ?? child.signalCode)}): ${log}`)
  })
  return {
    child,
    setHosts: async (next) => {
      const before = reloads
      writeFileSync(file, hostsText(next))
      child.kill('SIGHUP')
      await waitFor(() => reloads > before, { what: `dnsmasq to re-read its hosts file; its log: ${log.slice(-500)}`, timeoutMs: 5_000, intervalMs: 20 })
    },
    stop
  }
}

/** The router's environment for dns-proxy mode on the topology, as an operator would write the pod spec. */
export function dnsProxyEnv (forwards: string, extra: Record<string, string> = {}): Record<string, string> {
  return {
    EGRESS_ROUTER_MODE: 'dns-proxy',
    EGRESS_SOURCE: `${v4.source}/${v4.prefixLength}`,
    EGRESS_GATEWAY: v4.gateway,
    EGRESS_INTERFACE: LAB.links.routerLan,
    EGRESS_POD_INTERFACE: LAB.links.routerPod,
    EGRESS_DNS_PROXY_DESTINATION: forwards,
    EGRESS_HEALTH_ADDRESS: ':9090',
    EGRESS_DRAIN_TIMEOUT: '1s',
    EGRESS_DNS_MIN_TTL: '1s',
    ...extra
  }
}

/** Every destination address of the lab topology. */
export const ALL_DEST = [v4.dest, ...v4.destExtra]

/** Where a connection through the router landed ("203.0.113.10:4711") and the source the destination saw. */
export function landing (r: ClientResult): { at: string, from: string } | { error: string } {
  if (!r.ok) return { error: r.error.code }
  if (r.greeting === null) return { error: 'no greeting' }
  return { at: r.greeting.local, from: hostOf(r.greeting.peer) }
}

/** One peer server per address, all on the same port (a forward has one target port for every address). */
export async function serversOnOnePort (t: Test, topo: Topology, hosts: readonly string[], mode: TcpMode): Promise<{ port: number, servers: Map<string, PeerServer> }> {
  const servers = new Map<string, PeerServer>()
  let port = 0
  for (const host of hosts) {
    const s = await startPeerServer(topo, { host, tcp: { port, mode } })
    t.teardown(s.stop)
    port = s.tcpPort as number
    servers.set(host, s)
  }
  return { port, servers }
}

/** n connections one after the other through the router's port; how many reached each destination address. */
export async function spread (topo: Topology, port: number, n: number): Promise<{ counts: Record<string, number>, failures: string[], strangers: string[] }> {
  const counts: Record<string, number> = Object.fromEntries(ALL_DEST.map((a) => [a, 0]))
  const failures: string[] = []
  const strangers: string[] = []
  for (let i = 0; i < n; i++) {
    const l = landing(await tcpRequest(topo, { host: v4.routerPod, port, send: `connection ${i}` }))
    if ('error' in l) { failures.push(l.error); continue }
    const host = hostOf(l.at)
    counts[host] = (counts[host] ?? 0) + 1
    if (l.from !== v4.source) strangers.push(l.from)
  }
  return { counts, failures, strangers }
}

/** Starts the daemon (SIGTERM in t.teardown, SIGKILL if it hangs); by default waits until it is ready. */
export async function dnsDaemon (t: Test, topo: Topology, forwards: string, opts: { ready?: boolean, env?: Record<string, string> } = {}): Promise<RouterProcess> {
  const router = startRouter(topo, dnsProxyEnv(forwards, opts.env))
  t.teardown(async () => { await router.stop('SIGTERM', 10_000) })
  if (opts.ready !== false) await router.waitReady(20_000)
  return router
}

/** GET /readyz from inside the router namespace: the status and the parsed body. */
export async function readyz (topo: Topology): Promise<{ status: number, body: { ready: boolean, checks: Record<string, { ok: boolean, detail: string }> } | null }> {
  const r = await topo.exec('router', ['curl', '-sS', '--max-time', '3', '-w', '\n%{http_code}', 'http://127.0.0.1:9090/readyz'], { timeoutMs: 8_000 })
  const cut = r.stdout.lastIndexOf('\n')
  const status = Number(r.stdout.slice(cut + 1)) || 0
  try {
    return { status, body: JSON.parse(r.stdout.slice(0, cut)) }
  } catch {
    return { status, body: null }
  }
}

// ---------------------------------------------------------------------------------------------
// The streaming client

export interface Totals { bytes: number, sha256: string }
export interface StreamResult {
  ok: boolean
  greeting?: { local: string, peer: string } | null
  error?: { code: string, message: string }
  sent: Totals
  received: Totals
  ms: number
}

export interface StreamClient {
  readonly child: ChildProcess
  /** the greeting as soon as it arrived: which destination address and what source it saw */
  readonly greeting: Promise<{ local: string, peer: string }>
  readonly result: Promise<StreamResult>
  /** true once the result line is in */
  finished: () => boolean
}

/** Starts stream-client.mjs in the client namespace; killed in t.teardown if still running. */
export function streamClient (t: Test, topo: Topology, opts: { host: string, port: number, sendBytes?: number, rate?: number, pauseAfter?: number, pauseMs?: number, timeoutMs?: number }): StreamClient {
  const argv = [process.execPath, STREAM_CLIENT, '--host', opts.host, '--port', String(opts.port), '--timeout', String(opts.timeoutMs ?? 60_000)]
  if (opts.sendBytes !== undefined) argv.push('--send-bytes', String(opts.sendBytes))
  if (opts.rate !== undefined) argv.push('--rate', String(opts.rate))
  if (opts.pauseAfter !== undefined) argv.push('--pause-after', String(opts.pauseAfter), '--pause-ms', String(opts.pauseMs ?? 0))
  const env = { ...process.env }
  delete env.NODE_OPTIONS
  const child = topo.spawn('client', argv, { env })
  t.teardown(async () => { await stopChild(child, 1_000) })
  let stderr = ''
  child.stderr?.setEncoding('utf8').on('data', (s: string) => { stderr += s })
  let done = false
  let onGreeting!: (g: { local: string, peer: string }) => void
  let failGreeting!: (e: Error) => void
  const greeting = new Promise<{ local: string, peer: string }>((resolve, reject) => { onGreeting = resolve; failGreeting = reject })
  greeting.catch(() => {})
  const result = new Promise<StreamResult>((resolve, reject) => {
    let last: StreamResult | null = null
    if (child.stdout !== null) {
      createInterface({ input: child.stdout }).on('line', (line) => {
        let obj: { event?: string, greeting?: { local: string, peer: string } }
        try { obj = JSON.parse(line) } catch { return }
        if (obj.event === 'greeting' && obj.greeting !== undefined) onGreeting(obj.greeting)
        if (obj.event === 'done') { last = obj as unknown as StreamResult; done = true }
      })
    }
    child.once('close', (code, signal) => {
      if (last !== null) { failGreeting(new Error(`no greeting: ${JSON.stringify(last)}`)); resolve(last); return }
      const err = new Error(`stream-client gave no result (exit ${String(code ?? signal)}): ${stderr.trim()}`)
      failGreeting(err)
      reject(err)
    })
  })
  return { child, greeting, result, finished: () => done }
}

/** VmRSS of a process in bytes (from /proc/PID/status), or null once it is gone. */
export function rssBytes (pid: number): number | null {
  let text: string
  try {
    text = readFileSync(`/proc/${pid}/status`, 'utf8')
  } catch {
    return null
  }
  const m = /^VmRSS:\s+(\d+) kB$/m.exec(text)
  return m === null ? null : Number(m[1]) * 1024
}
