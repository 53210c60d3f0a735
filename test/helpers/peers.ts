/**
 * Real peers for the namespace tests: a destination server (test/fixtures/peer-server.mjs) that
 * reports every connection, datagram and request with the address it came from, and clients that
 * connect from inside a namespace and return what the server told them. Everything is bounded in time.
 *
 *   const server = await startPeerServer(topo, { tcp: { mode: 'echo' } })
 *   t.teardown(server.stop)
 *   const r = await tcpRequest(topo, { host: LAB.v4.dest, port: server.tcpPort!, data: 'hi' })
 *   const seen = await server.waitForReport(r => r.event === 'connection', { what: 'the connection' })
 *   t.equal(hostOf(seen.peer), LAB.v4.source)
 */
import { type ChildProcess } from 'node:child_process'
import { isIP } from 'node:net'
import { fileURLToPath } from 'node:url'
import { type ExecResult } from '../../src/lab/exec.js'
import { stopChild } from '../../src/lab/exec.js'
import { LAB, type NsRole, type SpawnInNsOptions } from '../../src/lab/topology.js'
import { waitFor } from '../../src/lab/wait.js'

export const PEER_SERVER = fileURLToPath(new URL('../fixtures/peer-server.mjs', import.meta.url))
export const PEER_CLIENT = fileURLToPath(new URL('../fixtures/peers/peer-client.mjs', import.meta.url))

/** What the helpers need of a topology (a Topology is one). */
export interface NsRunner {
  exec: (role: NsRole, argv: readonly string[], opts?: { timeoutMs?: number, env?: NodeJS.ProcessEnv }) => Promise<ExecResult>
  spawn: (role: NsRole, argv: readonly string[], opts?: SpawnInNsOptions) => ChildProcess
}

/** "192.0.2.99:41234" → "192.0.2.99"; "[2001:db8::1]:80" → "2001:db8::1". */
export function hostOf (hostPort: string): string {
  const m = /^\[(.*)\]:\d+$/.exec(hostPort) ?? /^([^:]*):\d+$/.exec(hostPort)
  if (m === null) throw new TypeError(`not host:port: ${hostPort}`)
  return m[1] as string
}

/** "192.0.2.99:41234" → 41234. */
export function portOf (hostPort: string): number {
  const m = /:(\d+)$/.exec(hostPort)
  if (m === null) throw new TypeError(`not host:port: ${hostPort}`)
  return Number(m[1])
}

/** host + port as the peers print them: "[2001:db8::1]:80" for IPv6. */
export function joinHostPort (host: string, port: number): string {
  return isIP(host) === 6 ? `[${host}]:${port}` : `${host}:${port}`
}

/** Fixtures are plain .mjs: keep tap's loaders (NODE_OPTIONS) out of them. */
function fixtureEnv (): NodeJS.ProcessEnv {
  const env = { ...process.env }
  delete env.NODE_OPTIONS
  return env
}

// ---------------------------------------------------------------------------------------------
// Server

export type TcpMode = 'echo' | 'hello' | 'sink' | { send: number }
export type UdpMode = 'hello' | 'echo'

export interface PeerServerOptions {
  /** Default 'dest'. */
  ns?: NsRole
  /** Address to listen on; default LAB.v4.dest. */
  host?: string
  tcp?: { port?: number, mode?: TcpMode } | true
  udp?: { port?: number, mode?: UdpMode } | true
  http?: { port?: number } | true
  /** Deadline for the "listening" line; default 10 s. */
  readyTimeoutMs?: number
}

export interface Totals { bytes: number, sha256: string }

export type PeerReport =
  | { event: 'connection', proto: 'tcp', local: string, peer: string, mode: string }
  | { event: 'closed', proto: 'tcp', local: string, peer: string, received: Totals, sent: Totals, error?: string }
  | { event: 'datagram', proto: 'udp', local: string, peer: string, bytes: number, sha256: string }
  | { event: 'request', proto: 'http', local: string, peer: string, method: string, url: string, host: string | null }

interface Listening { event: 'listening', host: string, tcp?: { port: number }, udp?: { port: number }, http?: { port: number } }

export interface PeerServer {
  readonly ns: NsRole
  readonly host: string
  readonly tcpPort: number | undefined
  readonly udpPort: number | undefined
  readonly httpPort: number | undefined
  /** Every report so far, in order. */
  readonly reports: readonly PeerReport[]
  /** What the server wrote on stderr so far. */
  stderr: () => string
  /** The first report (already seen or yet to come) that matches. */
  waitForReport: <R extends PeerReport = PeerReport>(match: (r: PeerReport) => boolean, opts: { what: string, timeoutMs?: number }) => Promise<R>
  /** SIGTERM, SIGKILL after a grace; resolves once it has exited. Idempotent. */
  stop: () => Promise<void>
}

function listenArg (port: number | undefined, mode: string | undefined): string {
  return mode === undefined ? String(port ?? 0) : `${port ?? 0}:${mode}`
}

function tcpModeArg (mode: TcpMode | undefined): string | undefined {
  if (mode === undefined || typeof mode === 'string') return mode
  if (!Number.isInteger(mode.send) || mode.send < 0) throw new TypeError(`tcp send: ${mode.send}: an integer ≥ 0`)
  return `send=${mode.send}`
}

/** Starts peer-server.mjs in a namespace and resolves once it listens (rejects with its stderr if it does not). */
export async function startPeerServer (runner: NsRunner, opts: PeerServerOptions = {}): Promise<PeerServer> {
  const ns = opts.ns ?? 'dest'
  const host = opts.host ?? LAB.v4.dest
  const argv = [process.execPath, PEER_SERVER, '--host', host]
  const none = opts.tcp === undefined && opts.udp === undefined && opts.http === undefined
  const tcp = opts.tcp === true || none ? {} : opts.tcp
  const udp = opts.udp === true ? {} : opts.udp
  const http = opts.http === true ? {} : opts.http
  if (tcp !== undefined) argv.push('--tcp', listenArg(tcp.port, tcpModeArg(tcp.mode)))
  if (udp !== undefined) argv.push('--udp', listenArg(udp.port, udp.mode))
  if (http !== undefined) argv.push('--http', listenArg(http.port, undefined))

  const child = runner.spawn(ns, argv, { env: fixtureEnv() })
  const reports: PeerReport[] = []
  const strays: string[] = []
  let listening: Listening | undefined
  let stderr = ''
  let buffered = ''
  child.stdout?.setEncoding('utf8')
  child.stderr?.setEncoding('utf8')
  child.stderr?.on('data', (s: string) => { stderr += s })
  child.stdout?.on('data', (s: string) => {
    buffered += s
    let nl: number
    while ((nl = buffered.indexOf('\n')) >= 0) {
      const line = buffered.slice(0, nl)
      buffered = buffered.slice(nl + 1)
      let obj: { event?: string }
      try { obj = JSON.parse(line) } catch { strays.push(line); continue }
      if (obj.event === 'listening') listening = obj as Listening
      else reports.push(obj as PeerReport)
    }
  })
  let spawnError: Error | undefined
  child.once('error', (err) => { spawnError = err })
  const exited = (): boolean => child.exitCode !== null || child.signalCode !== null || spawnError !== undefined
  let stopping: Promise<void> | undefined
  const stop = async (): Promise<void> => { stopping ??= stopChild(child); await stopping }

  try {
    // An early exit (bad port, address in use) ends the wait at once rather than at its deadline.
    await waitFor(() => listening !== undefined || exited(),
      { what: `peer-server in ${ns} to listen on ${host}`, timeoutMs: opts.readyTimeoutMs ?? 10_000, intervalMs: 10 })
  } catch (err) {
    await stop()
    throw new Error(`${(err as Error).message}; stderr: ${stderr.trim()}`, { cause: err })
  }
  if (listening === undefined) {
    throw new Error(`peer-server in ${ns} exited before listening (${String(child.exitCode ?? child.signalCode ?? spawnError?.message)}): ${stderr.trim()}`)
  }

  return {
    ns,
    host,
    tcpPort: listening.tcp?.port,
    udpPort: listening.udp?.port,
    httpPort: listening.http?.port,
    reports,
    stderr: () => stderr + (strays.length > 0 ? `\n(non-JSON stdout: ${strays.join(' | ')})` : ''),
    waitForReport: async <R extends PeerReport = PeerReport>(match: (r: PeerReport) => boolean, o: { what: string, timeoutMs?: number }): Promise<R> => {
      const found = await waitFor(() => reports.find(match) ?? (exited() ? 'exited' as const : undefined),
        { what: o.what, timeoutMs: o.timeoutMs ?? 5_000, intervalMs: 10 })
      if (found === 'exited') throw new Error(`waiting for ${o.what}: peer-server has exited: ${stderr.trim()}`)
      return found as R
    },
    stop
  }
}

// ---------------------------------------------------------------------------------------------
// Clients

export interface Greeting { proto: 'tcp' | 'udp', local: string, peer: string, bytes?: number, sha256?: string }

export type ClientResult =
  | {
    ok: true
    proto: 'tcp' | 'udp'
    /** The client's own address as its kernel chose it. */
    local: string
    remote: string
    /** The server's greeting (TCP first line; UDP hello reply) — `peer` is the source the server saw. */
    greeting: Greeting | null
    /** What followed the greeting (TCP), or the whole reply (UDP); text when ≤ 64 KiB. */
    body: Totals & { text?: string }
    sent: Totals
    attempts?: number
  }
  | { ok: false, proto: 'tcp' | 'udp', local: string | null, error: { code: string, message: string }, partial?: { bytes: number } }

export interface ClientOptions {
  /** Default 'client'. */
  ns?: NsRole
  host: string
  port: number
  /** Source address to bind. */
  local?: string
  /** Text to send, or a number of random bytes (checksummed in `sent`). */
  send?: string | number
  /** Whole exchange; default 5 s. */
  timeoutMs?: number
  /** UDP only: datagrams to try before giving up (spread over timeoutMs); default 3. */
  attempts?: number
}

async function runClient (runner: NsRunner, proto: 'tcp' | 'udp', o: ClientOptions): Promise<ClientResult> {
  const timeoutMs = o.timeoutMs ?? 5_000
  const argv = [process.execPath, PEER_CLIENT, '--proto', proto, '--host', o.host, '--port', String(o.port), '--timeout', String(timeoutMs)]
  if (o.local !== undefined) argv.push('--local', o.local)
  if (typeof o.send === 'string') argv.push('--data', o.send)
  if (typeof o.send === 'number') argv.push('--send-bytes', String(o.send))
  if (o.attempts !== undefined) argv.push('--attempts', String(o.attempts))
  // The client enforces timeoutMs itself; the outer deadline only catches a client that hangs.
  const r = await runner.exec(o.ns ?? 'client', argv, { timeoutMs: timeoutMs + 5_000, env: fixtureEnv() })
  const line = r.stdout.trim().split('\n').pop() ?? ''
  try {
    return JSON.parse(line) as ClientResult
  } catch {
    throw new Error(`peer-client ${proto} ${joinHostPort(o.host, o.port)} gave no result (exit ${String(r.code ?? r.signal)}${r.timedOut ? ', timed out' : ''}): ${r.stderr.trim()}`)
  }
}

/** Connects over TCP from a namespace, sends, half-closes, and returns everything the server said. */
export async function tcpRequest (runner: NsRunner, opts: ClientOptions): Promise<ClientResult> {
  return await runClient(runner, 'tcp', opts)
}

/** Sends a datagram from a namespace and returns the reply. */
export async function udpRequest (runner: NsRunner, opts: ClientOptions): Promise<ClientResult> {
  return await runClient(runner, 'udp', opts)
}

export interface HttpResult {
  /** curl's exit status: 0 ok, 7 refused, 28 timed out, 56 reset … */
  curlExit: number | null
  /** 0 when there was no HTTP response. */
  status: number
  body: string
  stderr: string
}

/** A real HTTP client: `curl` in a namespace, optionally through a proxy (`-x`); never through a proxy from the environment. */
export async function httpGet (runner: NsRunner, opts: { ns?: NsRole, url: string, proxy?: string, timeoutMs?: number, headers?: readonly string[] }): Promise<HttpResult> {
  const timeoutMs = opts.timeoutMs ?? 5_000
  const argv = ['curl', '-sS', '--max-time', String(timeoutMs / 1000), '-w', '\n%{http_code}']
  argv.push(...(opts.proxy === undefined ? ['--noproxy', '*'] : ['-x', opts.proxy]))
  for (const h of opts.headers ?? []) argv.push('-H', h)
  argv.push('--', opts.url)
  const r = await runner.exec(opts.ns ?? 'client', argv, { timeoutMs: timeoutMs + 5_000 })
  const cut = r.stdout.lastIndexOf('\n')
  return {
    curlExit: r.code,
    status: cut < 0 ? 0 : Number(r.stdout.slice(cut + 1)) || 0,
    body: cut < 0 ? r.stdout : r.stdout.slice(0, cut),
    stderr: r.stderr
  }
}
