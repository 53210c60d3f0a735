/**
 * The http-proxy mode's server: a forward proxy for absolute-form HTTP requests (streamed upstream
 * over undici's keep-alive connection pools) and CONNECT tunnels (connect-tunnel.ts), every
 * connection leaving from the egress source address, every destination checked by the ACL before a
 * byte goes out.
 *
 * Each request goes through small named passes — method, client, target, framing, destination
 * (ACL after one lookup) — and only then is streamed. Node's strict HTTP parser stays on (never
 * insecureHTTPParser): conflicting Content-Length / Transfer-Encoding is a 400 before we see it.
 */
import { readFileSync } from 'node:fs'
import { createServer, type IncomingHttpHeaders, type IncomingMessage, type Server, type ServerResponse } from 'node:http'
import type { Agent as Pools, Client, Dispatcher, buildConnector } from 'undici'
import type { AddressInfo, Socket } from 'node:net'
import type { Duplex } from 'node:stream'
import { createServer as createNetServer, type Server as NetServer } from 'node:net'
import type { Logger } from 'pino'
import type { HttpProxyConfig, IpAddress } from '../config/types.js'
import { EgressError } from '../errors.js'
import type { Metrics, Outcome } from '../observe/metrics.js'
import { connectionCounters } from './connection-counters.js'
import { adoptAccepted } from './read-buffers.js'
import { boundedMemo } from './memo.js'
import { loadUndiciCore, type UndiciCore } from './undici-core.js'
import { admit, admitAddress, compileAcl, compileClientFilter, describeDenial, type Admission, type CompiledAcl, type NameResolver } from './acl.js'
import { STATUS_TEXT, handleConnect, upstreamFailure, type GuardResult, type Refusal, type TunnelContext } from './connect-tunnel.js'
import { formatHost, formatTarget, parseAbsoluteTarget, parseIpAddress, type RequestTarget } from './target.js'

export type { NameResolver } from './acl.js'

export interface ProxyLimits {
  /** a client must have sent its complete request headers within this time (slowloris) */
  readonly headersTimeoutMs: number
  /** a connection (client or upstream, HTTP or tunnel) with no traffic for this long is closed */
  readonly idleTimeoutMs: number
  /** TCP connect to the destination */
  readonly connectTimeoutMs: number
  /** concurrent client connections; more are dropped at accept (default: from the descriptor limit) */
  readonly maxConnections: number
}

/** Descriptors kept for everything that is not a proxied connection: listeners, logs, DNS, netlink, nft. */
const RESERVED_FDS = 256
const MIN_MAX_CONNECTIONS = 1024
/** Used when the limit is unknown (no /proc) or unlimited. */
const FALLBACK_MAX_CONNECTIONS = 4096

/**
 * The connection bound for a soft RLIMIT_NOFILE: a proxied connection needs two descriptors (client and
 * upstream), so (soft − 256) / 2, at least 1024. Past the bound accept() would fail with EMFILE, which
 * Node handles by dropping connections it cannot see; a bound below it lets the proxy refuse (and say so).
 */
export function maxConnectionsForFdLimit (softLimit: number | null): number {
  if (softLimit === null || !Number.isFinite(softLimit) || softLimit <= 0) return FALLBACK_MAX_CONNECTIONS
  return Math.max(MIN_MAX_CONNECTIONS, Math.floor((softLimit - RESERVED_FDS) / 2))
}

/** The soft "Max open files" limit from a /proc/<pid>/limits text; null when absent or unlimited. */
export function softFdLimit (procLimits: string): number | null {
  const m = /^Max open files\s+(\S+)/m.exec(procLimits)
  if (m === null || m[1] === 'unlimited') return null
  const n = Number(m[1])
  return Number.isSafeInteger(n) ? n : null
}

function processFdLimit (): number | null {
  try {
    return softFdLimit(readFileSync('/proc/self/limits', 'utf8'))
  } catch {
    return null
  }
}

export const DEFAULT_LIMITS: ProxyLimits = {
  headersTimeoutMs: 30_000,
  idleTimeoutMs: 300_000,
  connectTimeoutMs: 10_000,
  maxConnections: maxConnectionsForFdLimit(processFdLimit())
}

export interface HttpProxyOptions {
  readonly config: HttpProxyConfig
  /** EGRESS_SOURCE: every outgoing connection is bound to it */
  readonly sourceAddress: string
  readonly resolver: NameResolver
  readonly logger: Logger
  readonly metrics: Metrics
  readonly limits?: Partial<ProxyLimits>
}

export interface HttpProxyServer {
  readonly server: Server
  /** May be called once per address (e.g. every address of the pod interface); all feed the one server. */
  listen (host: string, port: number): Promise<AddressInfo>
  /** New ACL, clients and CONNECT ports (SIGHUP); connections and requests in flight are not affected. A port change needs a restart. */
  update (config: HttpProxyConfig): void
  /** Stop accepting, let requests and tunnels in flight finish for up to drainMs, then destroy the rest. */
  close (drainMs: number): Promise<void>
  activeConnections (): number
}

const MODE = 'http-proxy'
const DROP_LOG_INTERVAL_MS = 10_000
const VIA = '1.1 egress-router'

/** RFC 9110 §7.6.1 hop-by-hop fields, plus the non-standard ones clients still send. */
const HOP_BY_HOP = new Set(['connection', 'keep-alive', 'proxy-connection', 'te', 'trailer', 'transfer-encoding', 'upgrade', 'http2-settings'])
/** Fields a `Connection` token must not remove: they frame the message or name the destination. */
const PROTECTED = new Set(['host', 'content-length'])

const NO_TOKENS: ReadonlySet<string> = new Set()

/**
 * The sets for one-line Connection fields by their text: nearly every message has none or the same
 * `keep-alive` / `close`, and splitting it anew was a measurable part of a keep-alive request. Bounded.
 */
const lineTokens = boundedMemo(256, (line: string) => tokensOf([line]))

function connectionTokens (values: ReadonlyArray<string | string[] | undefined>): ReadonlySet<string> {
  const lines: string[] = []
  for (const v of values) {
    if (Array.isArray(v)) lines.push(...v)
    else if (v !== undefined) lines.push(v)
  }
  if (lines.length === 0) return NO_TOKENS
  if (lines.length > 1) return tokensOf(lines)
  return lineTokens(lines[0] as string)
}

function tokensOf (lines: readonly string[]): ReadonlySet<string> {
  const tokens = new Set<string>()
  for (const line of lines) {
    for (const t of line.split(',')) {
      const token = t.trim().toLowerCase()
      if (token !== '' && !PROTECTED.has(token)) tokens.add(token)
    }
  }
  return tokens
}

const dropped = (name: string, tokens: ReadonlySet<string>): boolean =>
  HOP_BY_HOP.has(name) || name.startsWith('proxy-') || tokens.has(name)

/**
 * Headers for the upstream request, as a flat raw list (the client's field names and order kept):
 * hop-by-hop fields, those named in Connection and every Proxy-* removed; Host taken from the
 * request URI (never the client's Host header); Via added. The body's framing is the client's:
 * its Content-Length stays, a chunked body (Transfer-Encoding is hop-by-hop) is sent chunked again
 * by the pool; `Expect` was answered by us.
 */
export function upstreamRequestHeaders (rawHeaders: readonly string[], authority: string): string[] {
  const connection: string[] = []
  let via: string | undefined
  for (let i = 0; i + 1 < rawHeaders.length; i += 2) {
    const name = (rawHeaders[i] ?? '').toLowerCase()
    if (name === 'connection' || name === 'proxy-connection') connection.push(rawHeaders[i + 1] ?? '')
    else if (name === 'via') via = via === undefined ? rawHeaders[i + 1] : `${via}, ${rawHeaders[i + 1] ?? ''}`
  }
  const tokens = connectionTokens(connection)
  const out: string[] = ['Host', authority]
  for (let i = 0; i + 1 < rawHeaders.length; i += 2) {
    const name = rawHeaders[i] ?? ''
    const lower = name.toLowerCase()
    if (dropped(lower, tokens) || lower === 'host' || lower === 'via' || lower === 'expect') continue
    out.push(name, rawHeaders[i + 1] ?? '')
  }
  out.push('Via', via === undefined ? VIA : `${via}, ${VIA}`)
  return out
}

/**
 * Response headers for the client as the flat list writeHead takes, from undici's parsed fields
 * (lower-case names; a repeated field such as Set-Cookie is an array and stays repeated): hop-by-hop
 * fields and those named in Connection removed, Via added.
 */
export function downstreamResponseHeaders (headers: IncomingHttpHeaders, closeConnection: boolean): string[] {
  const tokens = connectionTokens([headers.connection])
  const out: string[] = []
  for (const name in headers) {
    const value = headers[name]
    if (value === undefined || dropped(name, tokens)) continue
    if (Array.isArray(value)) for (const v of value) out.push(name, v)
    else out.push(name, value)
  }
  out.push('Via', VIA)
  if (closeConnection) out.push('Connection', 'close')
  return out
}

/** How long a free upstream connection is kept when the destination sends no Keep-Alive hint. */
const FREE_SOCKET_MS = 30_000

/**
 * The upstream side: undici connection pools (one per destination address and port, kept alive,
 * one request at a time per connection) whose sockets leave from the egress source. A connect
 * deadline, and the idle deadline while waiting for the answer and between its chunks, surface as
 * errors (504) instead of a hanging request. Free connections are kept for the destination's
 * Keep-Alive hint, at most the idle deadline.
 */
function upstreamPools (undici: UndiciCore, source: IpAddress, limits: ProxyLimits): Pools {
  const { Agent, Pool } = undici
  const connector = undici.buildConnector({ family: source.family, timeout: limits.connectTimeoutMs, noDelay: true })
  return new Agent({
    // localAddress as a client option: undici's connector overrides one given in `connect` with it
    localAddress: source.address,
    headersTimeout: limits.idleTimeoutMs,
    bodyTimeout: limits.idleTimeoutMs,
    keepAliveTimeout: Math.min(FREE_SOCKET_MS, limits.idleTimeoutMs),
    keepAliveMaxTimeout: limits.idleTimeoutMs,
    pipelining: 1,
    connections: null,
    factory: (origin, opts) => new Pool(origin, { ...opts, factory: (o, clientOpts) => noReconnectAfterAbort(undici, o, clientOpts, connector) })
  })
}

/**
 * A Client that does not reconnect for a request that was just aborted. undici 7 (and 8 until
 * nodejs/undici#5845 is fixed) puts an in-flight request that is aborted back among the pending ones
 * when it destroys the connection, opens a new connection for it, and only then drops it: that
 * connection then sits open, unused — one per client that gave up, to a destination that may be
 * slow precisely because it is overloaded. The reconnect follows the 'disconnect' event
 * synchronously, so the connector refuses a connect made in that same turn; a later one (a real
 * request) connects as usual.
 */
function noReconnectAfterAbort (undici: UndiciCore, origin: string | URL, opts: Client.Options, connector: buildConnector.connector): Client {
  let afterAbort = false
  const client = new undici.Client(origin, {
    ...opts,
    connect: (options, callback) => {
      if (afterAbort) {
        afterAbort = false
        callback(new EgressError('ERR_ABORTED_REQUEST', 'no reconnect for an aborted request'), null)
        return
      }
      connector(options, callback)
    }
  })
  client.on('disconnect', (_origin, _targets, err) => {
    if ((err as Error & { code?: string }).code !== 'UND_ERR_INFO' || err.message !== 'aborted') return
    afterAbort = true
    queueMicrotask(() => { afterAbort = false })
  })
  return client
}

/** The client's request body as the pool reads it, counted on the way (an upload is a few chunks, not the hot path). */
async function * countedBody (req: IncomingMessage, sent: { up: number }, counter: { inc: (n: number) => void }): AsyncGenerator<Buffer> {
  for await (const chunk of req as AsyncIterable<Buffer>) {
    sent.up += chunk.length
    counter.inc(chunk.length)
    yield chunk
  }
}

interface ClientInfo {
  /** null when the peer address is not an IP address (never for TCP) */
  readonly address: IpAddress | null
  /** for logs and reasons */
  readonly text: string
}

/**
 * A client's address, parsed once per peer address text: clients repeat (a cluster's pods, a host's few
 * processes), and parsing and re-formatting the address was the largest piece of JavaScript in accepting a
 * connection. Bounded like the other tables (memo.ts); the ClientInfo is shared, hence readonly.
 */
const clientInfoOf = boundedMemo(1024, (peer: string | undefined): ClientInfo => {
  const address = parseIpAddress(peer ?? '')
  return { address, text: address?.address ?? String(peer) }
})

function describeClient (socket: Socket): ClientInfo {
  return clientInfoOf(socket.remoteAddress)
}

/** Verdicts for IP-literal targets, kept as long as the compiled rules they came from; bounded. */
const ADDRESS_CACHE_SIZE = 4096

interface Rules {
  readonly acl: CompiledAcl
  readonly clientAllowed: (address: IpAddress) => boolean
  readonly connectPorts: HttpProxyConfig['connectPorts']
  readonly accessLog: boolean
  /** the admission of an IP-literal target, remembered by its canonical text for as long as these rules */
  readonly admitAddress: (address: IpAddress) => Admission
}

const compileRules = (config: HttpProxyConfig, family: IpAddress['family']): Rules => {
  const acl = compileAcl(config.acl)
  return {
    acl,
    clientAllowed: compileClientFilter(config.clients),
    connectPorts: config.connectPorts,
    accessLog: config.accessLog,
    admitAddress: boundedMemo(ADDRESS_CACHE_SIZE, (address: IpAddress) => admitAddress(acl, address, family), (address) => address.address)
  }
}

export function createHttpProxyServer (opts: HttpProxyOptions): HttpProxyServer {
  const { config, resolver, logger: log, metrics } = opts
  const limits: ProxyLimits = { ...DEFAULT_LIMITS, ...opts.limits }
  const source = parseIpAddress(opts.sourceAddress)
  if (source === null) throw new TypeError(`sourceAddress '${opts.sourceAddress}' is not an IP address`)
  // Swapped as a whole by update() (SIGHUP): a request sees the old rules or the new ones, never a mix.
  let rules = compileRules(config, source.family)
  const listener = String(config.port)
  const labels = { mode: MODE, listener }

  const counters = connectionCounters(metrics, labels, () => clients.size)
  counters.attach()
  const bytes = {
    upstream: { inc: (n: number): void => { counters.bytes('up', n) } },
    downstream: { inc: (n: number): void => { counters.bytes('down', n) } }
  }
  // ACL decisions by verdict and rule, in plain numbers until a scrape (as connection-counters.ts does):
  // prom-client would hash the labels on every request.
  const decisions = { allow: new Map<string, number>(), deny: new Map<string, number>() }
  const countDecision = (action: 'allow' | 'deny', rule: string): void => {
    const byRule = decisions[action]
    byRule.set(rule, (byRule.get(rule) ?? 0) + 1)
  }
  const flushDecisions = (): void => {
    for (const action of ['allow', 'deny'] as const) {
      for (const [rule, n] of decisions[action]) metrics.aclDecisions.inc({ action, rule }, n)
      decisions[action].clear()
    }
  }
  metrics.beforeScrape.add(flushDecisions)

  // undici is loaded for the first plain-HTTP request: a proxy that only carries CONNECT tunnels (HTTPS
  // egress) never needs it, and starts ~100 ms sooner and smaller without it. Only its dispatchers are loaded
  // (undici-core.ts): the index would add fetch, WebSocket and the mock agents, ~7 MiB more.
  let pools: Pools | null = null
  let poolsLoading: Promise<Pools> | null = null
  const loadPools = (): Promise<Pools> => (poolsLoading ??= loadUndiciCore().then(u => {
    pools = upstreamPools(u, source, limits)
    return pools
  }))
  /** every open client connection, with its address parsed once at accept */
  const clients = new Map<Socket, ClientInfo>()
  let draining = false

  const server = createServer({
    headersTimeout: limits.headersTimeoutMs,
    // The whole-request deadline would cut long uploads; idle and header deadlines cover abuse.
    requestTimeout: 0,
    keepAliveTimeout: Math.min(5_000, limits.idleTimeoutMs),
    // How often the header deadline is checked (Node's default, 30 s, would make it meaningless).
    connectionsCheckingInterval: Math.max(10, Math.min(1_000, Math.floor(limits.headersTimeoutMs / 4))),
    insecureHTTPParser: false,
    // Answers and tunnel bytes go out at once (Node's default, stated because it matters: Nagle plus the
    // client's delayed ACK would hold every small answer for ~40 ms).
    noDelay: true
  })
  server.setTimeout(limits.idleTimeoutMs)
  server.maxConnections = limits.maxConnections

  // ---- shared passes ---------------------------------------------------------------------------

  const clientInfo = (socket: Socket): ClientInfo => clients.get(socket) ?? describeClient(socket)
  const clientOf = (socket: Socket): string => clientInfo(socket).text

  const clientPass = (socket: Socket): Refusal | null => {
    const client = clientInfo(socket)
    if (client.address !== null && rules.clientAllowed(client.address)) return null
    return { status: 403, reason: `denied: client ${client.text} may not use this proxy (EGRESS_HTTP_PROXY_CLIENTS)`, outcome: 'denied' }
  }

  /** The admission for a target: synchronous (and remembered with the rules) for an IP literal, one lookup for a name. */
  const admission = (target: RequestTarget): Admission | Promise<Admission> => {
    const host = target.host
    if (host.kind === 'name') return admit(rules.acl, resolver, host, source.family)
    return rules.admitAddress(host.address)
  }

  const judge = (socket: Socket, target: RequestTarget, method: string, a: Admission): GuardResult => {
    const client = clientOf(socket)
    const where = formatTarget(target)
    if (a.kind === 'unresolved') {
      log.warn({ client, method, target: where, code: a.code, err: a.error ?? undefined }, 'destination does not resolve')
      return { ok: false, refusal: { status: 503, reason: `${formatHost(target.host)} does not resolve (${a.code})`, outcome: 'unresolved' } }
    }
    const d = a.decision
    const rule = d.rule === 'default' ? 'default' : String(d.rule.line)
    countDecision(d.action, rule)
    // One line per decision: who, where to, which address, which rule, the verdict. Allowed requests
    // only with the access log on (it costs about a fifth of the keep-alive request rate).
    if ((d.action === 'deny' || rules.accessLog) && log.isLevelEnabled('info')) {
      log.info({
        event: 'acl', client, method, target: where, address: a.kind === 'allow' ? a.address.address : d.address?.address ?? null,
        action: d.action, rule, ruleText: d.rule === 'default' ? null : d.rule.text
      }, `${d.action} ${method} ${where}`)
    }
    if (a.kind === 'deny') return { ok: false, refusal: { status: 403, reason: describeDenial(d), outcome: 'denied' } }
    if (a.kind === 'no-route') {
      return { ok: false, refusal: { status: 502, reason: `no allowed address of ${where} is IPv${source.family} like the egress source`, outcome: 'error' } }
    }
    return { ok: true, address: a.address }
  }

  /** ACL after at most one lookup; a promise only when a name had to be resolved. */
  const destinationPass = (socket: Socket, target: RequestTarget, method: string): GuardResult | Promise<GuardResult> => {
    const a = admission(target)
    return a instanceof Promise ? a.then(x => judge(socket, target, method, x)) : judge(socket, target, method, a)
  }

  // ---- plain HTTP ------------------------------------------------------------------------------

  const reply = (req: IncomingMessage, res: ServerResponse, refusal: Refusal, finish: (o: Outcome) => void): void => {
    const level = refusal.status >= 500 ? 'warn' : 'info'
    log[level]({ client: clientOf(req.socket), method: req.method, target: req.url, status: refusal.status, outcome: refusal.outcome, reason: refusal.reason }, 'request refused')
    finish(refusal.outcome)
    if (res.headersSent || res.destroyed) { res.destroy(); return }
    const body = `${refusal.reason}\n`
    // Close after every refusal: an unread request body must not be parsed as the next request.
    res.writeHead(refusal.status, STATUS_TEXT[refusal.status], {
      'content-type': 'text/plain; charset=utf-8', 'content-length': Buffer.byteLength(body), connection: 'close'
    })
    res.end(body)
  }

  const onRequest = (req: IncomingMessage, res: ServerResponse, expectContinue: boolean): void => {
    const startedAt = performance.now()
    /** the target as the client wrote it, until it parses (req.url becomes the upstream path) */
    let where = req.url ?? ''
    const sent = { up: 0, down: 0 }
    let recorded = false
    const finish = (outcome: Outcome): void => {
      if (recorded) return
      recorded = true
      counters.outcome(outcome)
      // One event per request at debug, built only when it is written.
      if (log.isLevelEnabled('debug')) {
        log.debug({
          client: clientOf(req.socket), clientPort: req.socket.remotePort, method: req.method, target: where, status: res.statusCode,
          upstreamBytes: sent.up, downstreamBytes: sent.down, durationMs: Math.round(performance.now() - startedAt), outcome
        }, 'request done')
      }
    }
    /** the upstream request, once dispatched */
    let controller: Dispatcher.DispatchController | null = null
    // One listener for the end of every response, sent or not (a listener per concern cost per request).
    res.on('close', () => {
      const complete = res.writableFinished
      finish(complete ? 'ok' : 'aborted')
      // The client went away before the answer was through: stop the upstream request.
      if (!complete) controller?.abort(new Error('client went away'))
      // Draining: this connection may be idle now.
      if (draining) setImmediate(() => server.closeIdleConnections())
    })
    req.on('error', () => { /* client reset: res 'close' records it */ })
    const refuse = (refusal: Refusal): void => reply(req, res, refusal, finish)

    // pass: method — CONNECT never arrives here (the 'connect' event has it), anything else is forwarded
    if (req.method === undefined || req.method === 'CONNECT') return refuse({ status: 400, reason: 'bad method', outcome: 'bad-request' })
    // pass: client
    const denied = clientPass(req.socket)
    if (denied !== null) return refuse(denied)
    // pass: target — origin-form means the client talks to the proxy as if it were the server
    const url = req.url ?? ''
    if (url.startsWith('/') || url === '*') {
      return refuse({ status: 400, reason: 'this is a forward proxy: send requests in absolute form (http://host/path) or use CONNECT', outcome: 'bad-request' })
    }
    const parsed = parseAbsoluteTarget(url)
    if (!parsed.ok) return refuse({ status: 400, reason: parsed.reason, outcome: 'bad-request' })
    const { target, path } = parsed.value
    where = formatTarget(target)
    // pass: framing — a body is streamed with its length, or chunked again when it came chunked
    const hasBody = req.headers['transfer-encoding'] !== undefined || (req.headers['content-length'] !== undefined && req.headers['content-length'] !== '0')

    // pass: destination (ACL after one lookup), then stream
    const forward = (guard: GuardResult): void => {
      if (!guard.ok) return refuse(guard.refusal)
      if (res.destroyed || req.socket.destroyed) return finish('aborted')
      const dispatcher = pools
      // The first plain-HTTP request waits for undici to load, then comes back here.
      if (dispatcher === null) { loadPools().then(() => { forward(guard) }, failed); return }
      const address = guard.address
      // While a request is in flight the upstream socket's idle deadline decides (504, or a cut
      // response): a client quietly waiting for a slow destination is not idle.
      res.on('timeout', () => {})
      if (expectContinue) res.writeContinue()
      const origin = `http://${address.family === 6 ? `[${address.address}]` : address.address}:${target.port}`
      let answered = false
      let refused = false
      // A client that stops reading pauses the destination's answer (backpressure).
      res.on('drain', () => { controller?.resume() })
      dispatcher.dispatch({
        origin,
        path,
        method: req.method as Dispatcher.HttpMethod,
        headers: upstreamRequestHeaders(req.rawHeaders, target.authority),
        // undici takes async iterables as bodies (its types list only Readable)
        body: hasBody ? countedBody(req, sent, bytes.upstream) as unknown as Dispatcher.DispatchOptions['body'] : null
      }, {
        onRequestStart (c) {
          controller = c
          if (res.destroyed) c.abort(new Error('client went away'))
        },
        onResponseStart (c, statusCode, headers, statusMessage) {
          if (statusCode < 200) return // 1xx: undici reads past it
          answered = true
          if (res.destroyed || res.headersSent) { c.abort(new Error('client went away')); return }
          try {
            res.writeHead(statusCode, statusMessage, downstreamResponseHeaders(headers, draining))
          } catch (err) {
            // A field undici accepted but Node's server refuses to write (ERR_INVALID_CHAR, …): answer 502
            // first, then drop the upstream request (its abort must not reset that answer).
            refused = true
            reply(req, res, { status: 502, reason: `invalid response from the destination: ${(err as Error).message}`, outcome: 'error' }, finish)
            c.abort(err as Error)
          }
        },
        onResponseData (c, chunk) {
          sent.down += chunk.length
          bytes.downstream.inc(chunk.length)
          if (!res.write(chunk)) c.pause()
        },
        onResponseEnd () {
          res.end()
        },
        onResponseError (_c, err: Error & { code?: string }) {
          if (refused) return
          // The client went first (its close aborted the upstream request): nothing to answer.
          if (res.destroyed || req.socket.destroyed) { finish('aborted'); return }
          if (!answered) {
            log.warn({ client: clientOf(req.socket), target: where, address: address.address, err }, 'upstream request failed')
            reply(req, res, upstreamFailure(err), finish)
            return
          }
          // The destination died mid-body: the client must see a truncated response, not a clean end.
          log.warn({ client: clientOf(req.socket), target: where, err }, 'upstream response broke off')
          finish('error')
          res.destroy()
        }
      })
    }
    const failed = (err: unknown): void => {
      log.error({ err }, 'request handler failed')
      finish('error')
      res.destroy()
    }
    try {
      const guard = destinationPass(req.socket, target, req.method)
      if (guard instanceof Promise) guard.then(forward).catch(failed)
      else forward(guard)
    } catch (err) {
      failed(err)
    }
  }

  server.on('request', (req, res) => onRequest(req, res, false))
  // Answer 100 Continue only once the destination is allowed.
  server.on('checkContinue', (req, res) => onRequest(req, res, true))

  // ---- CONNECT ---------------------------------------------------------------------------------

  const tunnelContext = (): TunnelContext => {
    let recorded = false
    return {
      source,
      connectPorts: rules.connectPorts,
      connectTimeoutMs: limits.connectTimeoutMs,
      idleTimeoutMs: limits.idleTimeoutMs,
      logger: log,
      upstreamBytes: bytes.upstream,
      downstreamBytes: bytes.downstream,
      clientPass,
      guard: destinationPass,
      finish: (outcome) => { if (!recorded) { recorded = true; counters.outcome(outcome) } }
    }
  }
  server.on('connect', (req: IncomingMessage, socket: Duplex, head: Buffer) => {
    // Taken in the event itself, before anything after the request head is read in JavaScript: the
    // tunnel's client side then reads into relay-owned buffers too (read-buffers.ts).
    handleConnect(tunnelContext(), req, adoptAccepted(socket as Socket), head)
  })

  // ---- connections, malformed requests, drain --------------------------------------------------

  let onIdle: (() => void) | null = null
  // one listener for every connection's close (not a closure per connection: an open tunnel would keep it)
  function onClientClose (this: Socket): void {
    clients.delete(this)
    if (clients.size === 0) onIdle?.()
  }
  server.on('connection', (socket: Socket) => {
    clients.set(socket, describeClient(socket))
    counters.accepted()
    socket.on('close', onClientClose)
  })
  // At the bound a connection is closed at accept, without a byte read. A client retrying in a loop
  // must not turn that into a log line per attempt: the first drop is logged at once, later ones as
  // one line with their count per DROP_LOG_INTERVAL_MS.
  let dropsUnlogged = 0
  let dropLogAt = 0
  server.on('drop', (data?: { remoteAddress?: string }) => {
    dropsUnlogged += 1
    const now = performance.now()
    if (now < dropLogAt) return
    dropLogAt = now + DROP_LOG_INTERVAL_MS
    log.warn({ client: data?.remoteAddress, maxConnections: limits.maxConnections, dropped: dropsUnlogged }, 'connection dropped: too many connections')
    dropsUnlogged = 0
  })
  server.on('clientError', (err: Error & { code?: string }, socket: Duplex) => {
    const code = err.code ?? ''
    if (code === 'ECONNRESET' || code === 'EPIPE' || !socket.writable) { socket.destroy(); return }
    const [status, text, outcome]: [number, string, Outcome] =
      code === 'HPE_HEADER_OVERFLOW' ? [431, 'Request Header Fields Too Large', 'bad-request']
        : code === 'ERR_HTTP_REQUEST_TIMEOUT' ? [408, 'Request Timeout', 'timeout']
          : [400, 'Bad Request', 'bad-request']
    log.info({ client: clientOf(socket as Socket), code, status, reason: err.message }, 'malformed or slow request')
    counters.outcome(outcome)
    // As Node's default: answer only when no response has started on this connection, then drop it.
    const inFlight = (socket as Socket & { _httpMessage?: { headersSent?: boolean } })._httpMessage
    if (inFlight?.headersSent !== true) {
      socket.write(`HTTP/1.1 ${status} ${text}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n`)
    }
    socket.destroy()
  })
  server.on('error', (err) => { log.error({ err }, 'http proxy listener error') })

  let closing: Promise<void> | null = null
  const extraListeners: NetServer[] = []

  return {
    server,
    activeConnections: () => clients.size,

    listen (host, port) {
      return new Promise((resolve, reject) => {
        const onError = (err: Error): void => reject(err)
        if (!server.listening && extraListeners.length === 0) {
          server.once('error', onError)
          server.listen(port, host, () => {
            server.removeListener('error', onError)
            resolve(server.address() as AddressInfo)
          })
          return
        }
        // One http.Server listens once; further addresses hand their connections to it.
        const extra = createNetServer({ allowHalfOpen: true, noDelay: true }, socket => server.emit('connection', socket))
        extra.maxConnections = limits.maxConnections
        extra.on('drop', (data?: { remoteAddress?: string }) => server.emit('drop', data))
        extra.once('error', onError)
        extra.listen(port, host, () => {
          extra.removeListener('error', onError)
          extra.on('error', (err) => { log.error({ err }, 'http proxy listener error') })
          extraListeners.push(extra)
          resolve(extra.address() as AddressInfo)
        })
      })
    },

    update (next) {
      if (next.port !== config.port) log.warn({ port: config.port, requested: next.port }, 'the http proxy port changes only on restart')
      rules = compileRules(next, source.family)
      log.info({ rules: next.acl.length }, 'http proxy ACL updated')
    },

    close (drainMs) {
      closing ??= new Promise<void>(resolve => {
        draining = true
        let listenerClosed = !server.listening
        const finishIfDone = (): void => {
          if (!listenerClosed || clients.size > 0) return
          clearTimeout(deadline)
          if (poolsLoading !== null) void poolsLoading.then(async p => { await p.destroy() }, () => {})
          counters.detach()
          flushDecisions()
          metrics.beforeScrape.delete(flushDecisions)
          resolve()
        }
        const deadline = setTimeout(() => {
          log.info({ remaining: clients.size }, 'drain deadline: closing the remaining connections')
          for (const socket of clients.keys()) socket.destroy()
        }, drainMs)
        deadline.unref()
        onIdle = finishIfDone
        for (const extra of extraListeners) extra.close()
        if (server.listening) server.close(() => { listenerClosed = true; finishIfDone() })
        server.closeIdleConnections()
        finishIfDone()
      })
      return closing
    }
  }
}
