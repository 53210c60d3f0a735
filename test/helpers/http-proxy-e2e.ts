/**
 * What the http-proxy end-to-end tests share: the lab topology with the router's resolv.conf naming a real
 * dnsmasq in the LAN namespace (answering the test names from a hosts file), the real daemon in http-proxy
 * mode, a destination server on every destination address that reports what reached it, real curl in the
 * client namespace, and raw clients for what curl will not send. Everything is torn down in t.teardown.
 *
 *   const topo = await proxyTopology(t)
 *   await startDnsmasq(t, topo, { 'exact.lab.example': [LAB.v4.dest] })
 *   const dest = await startDest(t, topo)
 *   const router = await startProxy(t, topo, 'exact.lab.example\n')
 *   const r = await curl(topo, { url: `http://exact.lab.example:${dest.port}/x` })
 */
import { type ChildProcess } from 'node:child_process'
import { mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { createInterface } from 'node:readline'
import { fileURLToPath } from 'node:url'
import type { Test } from 'tap'
import { stopChild } from '../../src/lab/exec.js'
import { startRouter, type RouterProcess } from '../../src/lab/router-process.js'
import { buildTopology, LAB, type NsRole, type Topology } from '../../src/lab/topology.js'
import { waitFor } from '../../src/lab/wait.js'
import { hostOf } from './peers.js'

/** Network-namespace prefix of these tests (parallel test files must not collide). */
export const PREFIX = 'erhttpe2e-'
export const DEST_SERVER = fileURLToPath(new URL('../fixtures/http-proxy/dest-server.mjs', import.meta.url))
export const PROXY_CLIENT = fileURLToPath(new URL('../fixtures/http-proxy/proxy-client.mjs', import.meta.url))
/** EGRESS_HTTP_PROXY_PORT's default, which the tests leave as it is. */
export const PROXY_PORT = 8080

export type Family = 'v4' | 'v6'
export const addrs = (family: Family): typeof LAB.v4 | typeof LAB.v6 => family === 'v6' ? LAB.v6 : LAB.v4
export const bracket = (host: string): string => host.includes(':') ? `[${host}]` : host
/** The proxy as the clients name it: the router's pod-side address, port 8080. */
export const proxyUrl = (family: Family = 'v4'): string => `http://${bracket(addrs(family).routerPod)}:${PROXY_PORT}`
export const proxyHostPort = (family: Family = 'v4'): string => `${bracket(addrs(family).routerPod)}:${PROXY_PORT}`

/** Fixtures are plain .mjs: keep tap's loaders (NODE_OPTIONS) out of them. */
function fixtureEnv (): NodeJS.ProcessEnv {
  const env = { ...process.env }
  delete env.NODE_OPTIONS
  return env
}

/** A scratch directory, removed in t.teardown. */
export function scratchDir (t: Test): string {
  const dir = mkdtempSync(join(tmpdir(), PREFIX))
  t.teardown(() => { rmSync(dir, { recursive: true, force: true }) })
  return dir
}

/** The lab topology with the router's /etc/resolv.conf naming the LAN's dnsmasq; destroyed in t.teardown. */
export async function proxyTopology (t: Test, family: Family = 'v4'): Promise<Topology> {
  const a = addrs(family)
  const topo = await buildTopology({ prefix: PREFIX, ipv6: family === 'v6', dnsResolvConf: `nameserver ${a.gateway}\noptions timeout:1 attempts:2\n` })
  t.teardown(topo.destroy)
  return topo
}

export type Hosts = Record<string, readonly string[]>

/**
 * dnsmasq in the LAN namespace on EGRESS_GATEWAY:53, answering from a hosts file (A and AAAA, several
 * addresses per name allowed), authoritative for `example` (anything else there is NXDOMAIN; nothing is
 * forwarded anywhere). Stopped in t.teardown.
 */
export async function startDnsmasq (t: Test, topo: Topology, hosts: Hosts, family: Family = 'v4'): Promise<ChildProcess> {
  const a = addrs(family)
  const file = join(scratchDir(t), 'hosts')
  writeFileSync(file, Object.entries(hosts).flatMap(([name, list]) => list.map((addr) => `${addr} ${name}\n`)).join(''))
  const child = topo.spawn('lan', ['dnsmasq', '--keep-in-foreground', '--no-resolv', '--no-hosts', '--no-poll', '--bind-interfaces',
    `--listen-address=${a.gateway}`, '--port=53', `--addn-hosts=${file}`, '--local-ttl=5', '--local=/example/',
    '--pid-file=', '--user=root', '--log-facility=-'], { stdio: ['ignore', 'pipe', 'pipe'] })
  t.teardown(async () => { await stopChild(child) })
  let log = ''
  for (const stream of [child.stdout, child.stderr]) {
    if (stream !== null) createInterface({ input: stream }).on('line', (line) => { log += line + '\n' })
  }
  const exited = (): boolean => child.exitCode !== null || child.signalCode !== null
  const state = await waitFor(async () => {
    if (exited()) return 'exited'
    const r = await topo.exec('lan', ['ss', '-Hlun', 'src', `${bracket(a.gateway)}:53`])
    return r.stdout.trim() !== '' && /read \S+ - \d+ (names?|addresses)/.test(log) ? 'up' : undefined
  }, { what: 'dnsmasq to listen on port 53 and read its hosts file', timeoutMs: 10_000, intervalMs: 50 })
  if (state === 'exited') throw new Error(`dnsmasq exited (${String(child.exitCode ?? child.signalCode)}): ${log}`)
  return child
}

// ---------------------------------------------------------------------------------------------
// The destination

export type DestEvent =
  | { event: 'connection' | 'disconnect', id: number, local: string, peer: string }
  | { event: 'request', conn: number, local: string, peer: string, method: string, url: string, host: string | null, via: string | null, te: string | null, contentLength: string | null }
  | { event: 'received', conn: number, url: string, bytes: number, sha256: string }
  | { event: 'response', conn: number, url: string, bytes: number, sha256: string, complete: boolean }

export interface Dest {
  readonly port: number
  readonly events: readonly DestEvent[]
  /** The first event (already seen or yet to come) that matches. */
  waitFor: <E extends DestEvent>(match: (e: DestEvent) => boolean, what: string, timeoutMs?: number) => Promise<E>
  /** Requests whose URL contains the text. */
  requests: (urlPart: string) => Array<Extract<DestEvent, { event: 'request' }>>
  /** TCP connections accepted so far / still open. */
  connections: () => number
  openConnections: () => number
  stderr: () => string
}

/** dest-server.mjs in the dest namespace on every address (`::`, port 0); stopped in t.teardown. */
export async function startDest (t: Test, topo: Topology): Promise<Dest> {
  const child = topo.spawn('dest', [process.execPath, DEST_SERVER, '--host', '::', '--port', '0'], { env: fixtureEnv() })
  t.teardown(async () => { await stopChild(child) })
  const events: DestEvent[] = []
  let port: number | undefined
  let stderr = ''
  let accepted = 0
  const open = new Set<number>()
  child.stderr?.setEncoding('utf8').on('data', (s: string) => { stderr += s })
  if (child.stdout !== null) {
    createInterface({ input: child.stdout }).on('line', (line) => {
      let e: { event?: string, port?: number }
      try { e = JSON.parse(line) } catch { stderr += `(stdout) ${line}\n`; return }
      if (e.event === 'listening') { port = e.port; return }
      const ev = e as DestEvent
      if (ev.event === 'connection') { accepted++; open.add(ev.id) }
      if (ev.event === 'disconnect') open.delete(ev.id)
      events.push(ev)
    })
  }
  const exited = (): boolean => child.exitCode !== null || child.signalCode !== null
  await waitFor(() => port !== undefined || exited(), { what: 'the destination server to listen', timeoutMs: 10_000, intervalMs: 10 })
  if (port === undefined) throw new Error(`dest-server exited before listening: ${stderr}`)
  return {
    port,
    events,
    waitFor: async <E extends DestEvent>(match: (e: DestEvent) => boolean, what: string, timeoutMs = 5_000): Promise<E> => {
      const found = await waitFor(() => events.find(match) ?? (exited() ? 'exited' as const : undefined), { what, timeoutMs, intervalMs: 10 })
      if (found === 'exited') throw new Error(`waiting for ${what}: dest-server has exited: ${stderr}`)
      return found as E
    },
    requests: (urlPart) => events.filter((e): e is Extract<DestEvent, { event: 'request' }> => e.event === 'request' && e.url.includes(urlPart)),
    connections: () => accepted,
    openConnections: () => open.size,
    stderr: () => stderr
  }
}

// ---------------------------------------------------------------------------------------------
// The daemon

/** The router's environment for http-proxy mode on the topology, as an operator would write the pod spec. */
export function proxyEnv (acl: string, family: Family = 'v4', extra: Record<string, string> = {}): Record<string, string> {
  const a = addrs(family)
  return {
    EGRESS_ROUTER_MODE: 'http-proxy',
    EGRESS_SOURCE: `${a.source}/${a.prefixLength}`,
    EGRESS_GATEWAY: a.gateway,
    EGRESS_INTERFACE: LAB.links.routerLan,
    EGRESS_POD_INTERFACE: LAB.links.routerPod,
    EGRESS_HEALTH_ADDRESS: ':9090',
    EGRESS_DRAIN_TIMEOUT: '1s',
    EGRESS_HTTP_PROXY_DESTINATION: acl,
    ...extra
  }
}

/** Starts the daemon (SIGTERM in t.teardown, SIGKILL if it hangs) and waits until it is ready. */
export async function startProxy (t: Test, topo: Topology, acl: string, family: Family = 'v4', extra: Record<string, string> = {}): Promise<RouterProcess> {
  const router = startRouter(topo, proxyEnv(acl, family, extra))
  t.teardown(async () => { await router.stop('SIGTERM', 10_000) })
  await router.waitReady(20_000)
  return router
}

// ---------------------------------------------------------------------------------------------
// Clients

export interface CurlResult {
  /** curl's exit status: 0 ok, 7 refused, 22 HTTP error with --fail, 28 timed out, 56 CONNECT refused … */
  exit: number | null
  /** final HTTP status; 0 when there was none */
  status: number
  /** the proxy's answer to CONNECT (-p); 0 without a tunnel */
  connectStatus: number
  body: string
  stderr: string
}

export interface CurlOptions {
  url: string
  ns?: NsRole
  family?: Family
  /** false: no proxy at all */
  proxy?: string | false
  /** -p: tunnel through CONNECT */
  tunnel?: boolean
  /** further curl arguments, before the URL */
  args?: readonly string[]
  timeoutMs?: number
}

/** Real curl in a namespace (default the client), through the proxy (default the router's :8080). */
export async function curl (topo: Topology, o: CurlOptions): Promise<CurlResult> {
  const timeoutMs = o.timeoutMs ?? 10_000
  const argv = ['curl', '-sS', '--max-time', String(timeoutMs / 1000), '-w', '\n%{http_code} %{http_connect}']
  if (o.proxy === false) argv.push('--noproxy', '*')
  else argv.push('-x', o.proxy ?? proxyUrl(o.family))
  if (o.tunnel === true) argv.push('-p')
  argv.push(...(o.args ?? []), '--', o.url)
  const r = await topo.exec(o.ns ?? 'client', argv, { timeoutMs: timeoutMs + 5_000 })
  const cut = r.stdout.lastIndexOf('\n')
  const [status = '0', connect = '0'] = (cut < 0 ? '' : r.stdout.slice(cut + 1)).split(' ')
  return {
    exit: r.code,
    status: Number(status) || 0,
    connectStatus: Number(connect) || 0,
    body: cut < 0 ? r.stdout : r.stdout.slice(0, cut),
    stderr: r.stderr
  }
}

/** The destination's JSON answer to a plain request (what it saw), or null when the body is not one. */
export function seenBy (body: string): { local: string, peer: string, host: string | null, url: string, via: string | null, received: { bytes: number, sha256: string } } | null {
  try {
    const seen = JSON.parse(body) as { peer?: string }
    return typeof seen.peer === 'string' ? seen as ReturnType<typeof seenBy> : null
  } catch {
    return null
  }
}

export const peerHost = (hostPort: string): string => hostOf(hostPort)

export interface RawResult { status: number, head: string, body: string, bytes: number, closed: string }

/** Writes the bytes as given to the proxy from the client namespace, and returns its answer. */
export async function rawRequest (topo: Topology, data: string, opts: { family?: Family, timeoutMs?: number } = {}): Promise<RawResult> {
  return await proxyClient<RawResult>(topo, ['--mode', 'raw', '--proxy', proxyHostPort(opts.family), '--data', Buffer.from(data, 'latin1').toString('base64')], opts.timeoutMs ?? 5_000)
}

/** Runs proxy-client.mjs in the client namespace with a deadline and parses its one JSON line. */
export async function proxyClient<R> (topo: Topology, args: readonly string[], timeoutMs: number): Promise<R> {
  const argv = [process.execPath, PROXY_CLIENT, ...args, '--timeout', String(timeoutMs)]
  const r = await topo.exec('client', argv, { timeoutMs: timeoutMs + 10_000, env: fixtureEnv() })
  const line = r.stdout.trim().split('\n').pop() ?? ''
  try {
    return JSON.parse(line) as R
  } catch {
    throw new Error(`proxy-client ${args.slice(0, 2).join(' ')} gave no result (exit ${String(r.code ?? r.signal)}${r.timedOut ? ', timed out' : ''}): ${r.stderr.trim()}`)
  }
}

// ---------------------------------------------------------------------------------------------
// The daemon's resources

/** Open file descriptors of a process (`ls /proc/PID/fd | wc -l`). */
export function fdCount (pid: number): number {
  return readdirSync(`/proc/${pid}/fd`).length
}

/** Resident set size of a process, in KiB (VmRSS of /proc/PID/status). */
export function rssKiB (pid: number): number {
  const m = /^VmRSS:\s+(\d+) kB$/m.exec(readFileSync(`/proc/${pid}/status`, 'utf8'))
  if (m === null) throw new Error(`no VmRSS for pid ${pid}`)
  return Number(m[1])
}
