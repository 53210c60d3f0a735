/**
 * CONNECT tunnels on raw sockets.
 *
 * Guard first (target, port, then the shared client + ACL passes the server injects), connect from
 * the egress source address with a deadline, answer `200 Connection Established`, then relay both
 * ways with backpressure. A FIN is passed on as a FIN (half-close), an error or reset on one side
 * destroys the other, and an idle tunnel is closed after the idle timeout.
 */
import type { Socket } from 'node:net'
import type { IncomingMessage } from 'node:http'
import type { Logger } from 'pino'
import type { IpAddress } from '../config/types.js'
import { EgressError } from '../errors.js'
import type { Outcome } from '../observe/metrics.js'
import { pipe, type PipeResult } from './pipe.js'
import { connectOwned, discardReads } from './read-buffers.js'
import { formatTarget, parseAuthorityTarget, type RequestTarget } from './target.js'

/** An answer other than success: status line, the one-line reason, the metric outcome. */
export interface Refusal {
  readonly status: 400 | 403 | 502 | 503 | 504
  readonly reason: string
  readonly outcome: Outcome
}

export type GuardResult = { readonly ok: true, readonly address: IpAddress } | { readonly ok: false, readonly refusal: Refusal }

export interface ByteCounter { inc (n: number): void }

export interface TunnelContext {
  readonly source: IpAddress
  readonly connectPorts: readonly number[] | '*'
  readonly connectTimeoutMs: number
  readonly idleTimeoutMs: number
  readonly logger: Logger
  readonly upstreamBytes: ByteCounter
  readonly downstreamBytes: ByteCounter
  /** the client pass shared with plain HTTP (EGRESS_HTTP_PROXY_CLIENTS) */
  readonly clientPass: (client: Socket) => Refusal | null
  /** the destination pass shared with plain HTTP: ACL (one lookup), address family; logs the decision */
  readonly guard: (client: Socket, target: RequestTarget, method: string) => GuardResult | Promise<GuardResult>
  /** records how the tunnel ended (once) */
  readonly finish: (outcome: Outcome) => void
}

export const STATUS_TEXT: Record<Refusal['status'], string> = {
  400: 'Bad Request', 403: 'Forbidden', 502: 'Bad Gateway', 503: 'Service Unavailable', 504: 'Gateway Timeout'
}

export function connectPortAllowed (ports: readonly number[] | '*', port: number): boolean {
  return ports === '*' || ports.includes(port)
}

/** Maps an upstream connect/transfer failure to the answer the client gets. */
/** Our own connect deadline (tunnels), the kernel's, and undici's (plain HTTP: connect, waiting for the answer, between its chunks). */
const TIMEOUT_CODES = new Set(['ERR_UPSTREAM_CONNECT_TIMEOUT', 'ETIMEDOUT', 'UND_ERR_CONNECT_TIMEOUT', 'UND_ERR_HEADERS_TIMEOUT', 'UND_ERR_BODY_TIMEOUT'])
/** UND_ERR_SOCKET: undici's "other side closed" (the destination closed or reset the connection). */
const REFUSED_CODES = new Set(['ECONNREFUSED', 'ECONNRESET', 'EPIPE', 'ECONNABORTED', 'UND_ERR_SOCKET'])

export function upstreamFailure (error: unknown): Refusal {
  const code = (error as { code?: unknown } | null)?.code
  const what = error instanceof Error ? error.message : String(error)
  if (typeof code === 'string' && TIMEOUT_CODES.has(code)) {
    return { status: 504, reason: `upstream timed out: ${what}`, outcome: 'timeout' }
  }
  if (typeof code === 'string' && REFUSED_CODES.has(code)) {
    return { status: 502, reason: `upstream refused or reset the connection: ${what}`, outcome: 'refused' }
  }
  return { status: 502, reason: `upstream connection failed: ${what}`, outcome: 'error' }
}

/**
 * How long a refused CONNECT client gets to read the answer and close its side before the connection is
 * dropped. Without it a client that never closes would hold the connection (and a file descriptor) until
 * the idle timeout — minutes — for nothing.
 */
export const REFUSAL_LINGER_MS = 2_000

/**
 * A complete HTTP/1.1 error answer written on a raw socket, then our side is closed. Whatever the client
 * still sends is read and discarded (closing with unread data would make the kernel send a RST, which may
 * destroy the answer before the client read it); the connection ends when the client closes its side, or
 * lingerMs after the answer at the latest.
 */
export function answerOnSocket (socket: Socket, refusal: Refusal, lingerMs = REFUSAL_LINGER_MS): void {
  if (socket.destroyed) return
  const body = `${refusal.reason}\n`
  socket.end(
    `HTTP/1.1 ${refusal.status} ${STATUS_TEXT[refusal.status]}\r\n` +
    'Content-Type: text/plain; charset=utf-8\r\n' +
    `Content-Length: ${Buffer.byteLength(body)}\r\n` +
    'Connection: close\r\n\r\n' + body
  )
  discardReads(socket)
  // A plain timer, not socket.setTimeout: a client that keeps sending must not keep the connection either.
  const linger = setTimeout(() => { socket.destroy() }, lingerMs).unref()
  socket.once('close', () => { clearTimeout(linger) })
}

/**
 * A tunnel's client as seen while the tunnel is being set up: `gone` once it closed; `cancel`, while set,
 * stops what is in progress (the upstream connect). A plain object rather than an AbortController: one is
 * made per tunnel, and an AbortSignal is an EventTarget.
 */
export interface ClientWatch {
  gone: boolean
  cancel: (() => void) | null
}

/**
 * TCP connection from `source` to address:port, failing with ERR_UPSTREAM_CONNECT_TIMEOUT after
 * timeoutMs; with ERR_CLIENT_GONE when `watch.cancel` is called (the client went away).
 */
export function connectUpstream (address: IpAddress, port: number, source: IpAddress, timeoutMs: number, watch?: ClientWatch): Promise<Socket> {
  return new Promise((resolve, reject) => {
    // noDelay: tunnel bytes (a TLS handshake, a small request) go out as they come, never held for an ACK.
    // Reads into relay-owned buffers (read-buffers.ts): the download direction is written on without an allocation per read.
    const socket = connectOwned({ host: address.address, port, family: address.family, localAddress: source.address, allowHalfOpen: true, noDelay: true })
    const timer = setTimeout(() => {
      socket.destroy(new EgressError('ERR_UPSTREAM_CONNECT_TIMEOUT', `connect to ${address.address} port ${port} timed out after ${timeoutMs} ms`))
    }, timeoutMs).unref()
    if (watch !== undefined) watch.cancel = () => { socket.destroy(new EgressError('ERR_CLIENT_GONE', 'the client went away')) }
    const done = (): void => { clearTimeout(timer); if (watch !== undefined) watch.cancel = null }
    socket.once('error', error => { done(); reject(error) })
    socket.once('connect', () => { done(); socket.removeAllListeners('error'); resolve(socket) })
  })
}

/**
 * Relays client ⇄ upstream until both are closed, with pipe(): backpressure, `end` on one side becomes
 * `end` on the other (half-close), an error or a reset on one side resets the other, an idle tunnel is
 * reset after idleTimeoutMs. Both sockets must be allowHalfOpen (http.Server's are, connectUpstream's are).
 */
export function relay (client: Socket, upstream: Socket, ctx: Pick<TunnelContext, 'idleTimeoutMs' | 'upstreamBytes' | 'downstreamBytes'>): Promise<PipeResult> {
  const up = ctx.upstreamBytes
  const down = ctx.downstreamBytes
  return pipe(client, upstream, {
    idleTimeoutMs: ctx.idleTimeoutMs,
    // CONNECT tunnels never had TCP keepalive of their own; the idle deadline bounds them.
    keepAliveMs: 0,
    onBytes: (dir, n) => { if (dir === 'up') up.inc(n); else down.inc(n) }
  })
}

/** The 'connect' event of the proxy's http.Server. Never throws; every path ends in finish(). */
export function handleConnect (ctx: TunnelContext, req: IncomingMessage, client: Socket, head: Buffer): void {
  // Only the target is kept: the request object (a stream with its headers) is not held for the tunnel's life.
  const url = req.url ?? ''
  const log = ctx.logger
  const startedAt = performance.now()
  // Once the server hands the socket over it has no error listener of ours yet: a reset now must not crash.
  const early = (err: Error): void => { log.debug({ err, client: client.remoteAddress }, 'CONNECT client socket error') }
  client.on('error', early)
  const onIdle = (): void => { client.destroy() }
  client.setTimeout(ctx.idleTimeoutMs, onIdle)
  const watch: ClientWatch = { gone: false, cancel: null }
  const onGone = (): void => { watch.gone = true; watch.cancel?.() }
  client.once('close', onGone)

  const refuse = (refusal: Refusal): void => {
    log.info({ client: client.remoteAddress, method: 'CONNECT', target: url, status: refusal.status, outcome: refusal.outcome, reason: refusal.reason }, 'CONNECT refused')
    answerOnSocket(client, refusal)
    ctx.finish(refusal.outcome)
  }

  void (async () => {
    const denied = ctx.clientPass(client)
    if (denied !== null) return refuse(denied)
    const parsed = parseAuthorityTarget(url)
    if (!parsed.ok) return refuse({ status: 400, reason: parsed.reason, outcome: 'bad-request' })
    const target = parsed.value
    if (!connectPortAllowed(ctx.connectPorts, target.port)) {
      return refuse({ status: 403, reason: `denied: CONNECT to port ${target.port} is not allowed (EGRESS_HTTP_PROXY_CONNECT_PORTS)`, outcome: 'denied' })
    }
    const guard = await ctx.guard(client, target, 'CONNECT')
    if (!guard.ok) return refuse(guard.refusal)
    if (watch.gone) return ctx.finish('aborted')

    let upstream: Socket
    try {
      upstream = await connectUpstream(guard.address, target.port, ctx.source, ctx.connectTimeoutMs, watch)
    } catch (error) {
      if (watch.gone) return ctx.finish('aborted')
      return refuse(upstreamFailure(error))
    }
    if (client.destroyed) { upstream.destroy(); return ctx.finish('aborted') }
    client.removeListener('close', onGone)
    client.removeListener('error', early)
    client.removeListener('timeout', onIdle)
    client.write('HTTP/1.1 200 Connection Established\r\n\r\n')
    // This function ends here: what it set up (its closures, the request's `head` and the buffer that holds it)
    // is not kept for the tunnel's life, only what the tunnel's end is reported with.
    startTunnel(ctx, client, upstream, head, { target, address: guard.address, startedAt })
  })().catch((err: unknown) => {
    // A bug, not a client behaviour: log it, drop the connection, keep serving.
    log.error({ err }, 'CONNECT handler failed')
    client.destroy()
    ctx.finish('error')
  })
}

/** What a tunnel's end is logged with (formatted only when it is). */
interface TunnelInfo {
  readonly target: RequestTarget
  readonly address: IpAddress
  readonly startedAt: number
}

/** Relays an established tunnel (the 200 sent), then records how it ended. */
function startTunnel (ctx: TunnelContext, client: Socket, upstream: Socket, head: Buffer, info: TunnelInfo): void {
  const headBytes = head.length
  if (headBytes > 0) { upstream.write(head); ctx.upstreamBytes.inc(headBytes) }
  relay(client, upstream, ctx).then((result) => {
    // A tunnel broken by an error counts as aborted, as it always has.
    const outcome: Outcome = result.outcome === 'error' ? 'aborted' : result.outcome
    const log = ctx.logger
    // built only when written: this runs once per tunnel
    if (log.isLevelEnabled('debug')) log.debug({
      client: client.remoteAddress, clientPort: client.remotePort, target: formatTarget(info.target), address: info.address.address,
      upstreamBytes: result.up + headBytes, downstreamBytes: result.down,
      durationMs: Math.round(performance.now() - info.startedAt), outcome, err: result.error
    }, 'tunnel closed')
    ctx.finish(outcome)
  }, (err: unknown) => {
    ctx.logger.error({ err }, 'CONNECT relay failed')
    client.destroy()
    upstream.destroy()
    ctx.finish('error')
  })
}
