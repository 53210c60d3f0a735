/**
 * A bidirectional TCP relay between two connected sockets: the byte-moving core of the dns-proxy
 * forwarders and the CONNECT tunnels.
 *
 * - Backpressure: a direction pauses its source when the destination's buffer is full and resumes
 *   on 'drain', so memory per connection stays at about two socket high-water marks.
 * - Half-close: when one side sends FIN, the other side's write half is ended (FIN forwarded) while
 *   the opposite direction keeps flowing; the relay is done when both directions have ended.
 * - Errors: an error (or an abrupt destroy) on one side resets the other with RST, so a peer never
 *   mistakes a broken relay for a clean end of stream.
 * - No Transform streams and no per-chunk allocations: chunks go from one socket to the other as
 *   read, bytes are counted from `chunk.length`. A socket made by read-buffers.ts (connectOwned,
 *   adoptAccepted) reads into relay-owned buffers (bulk chunks written on without a copy, small ones
 *   copied out of the shared small buffer); other sockets are read through their 'data' events.
 */
import type { Socket } from 'node:net'
import { readSideOf } from './read-buffers.js'

/** 'up' = a → b (client to destination), 'down' = b → a. */
export type PipeDirection = 'up' | 'down'

/**
 * How the relay ended: `ok` both directions ended with FIN; `timeout` nothing moved for idleTimeoutMs;
 * `error` a socket failed (RST from a peer, EPIPE, ...); `aborted` the signal fired or a socket was
 * destroyed from outside.
 */
export type PipeOutcome = 'ok' | 'timeout' | 'error' | 'aborted'

export interface PipeOptions {
  /** called for every chunk relayed; keep it cheap (it runs on the hot path) */
  onBytes?: (dir: PipeDirection, n: number) => void
  /** reset both sides when neither socket has read or written for this long; 0 or absent = never */
  idleTimeoutMs?: number
  /** TCP keepalive initial delay on both sockets; 0 disables keepalive. Default 60 s. */
  keepAliveMs?: number
  /** aborting resets both sides (used to end a drain that ran out of time) */
  signal?: AbortSignal
  /**
   * The same as `signal` without an AbortController per connection: pipe() sets `control.abort`,
   * which resets both sides (a no-op once the relay has finished).
   */
  control?: PipeControl
}

export interface PipeControl {
  abort?: () => void
}

export interface PipeResult {
  /** bytes relayed a → b */
  up: number
  /** bytes relayed b → a */
  down: number
  outcome: PipeOutcome
  /** the first error seen, if any, and the side it happened on */
  error?: Error
  errorSide?: 'a' | 'b'
}

const DEFAULT_KEEPALIVE_MS = 60_000

/**
 * Relays a ⇄ b until both directions have ended or the relay fails; resolves (never rejects) once
 * every socket that was still open on entry has closed.
 *
 * Both sockets should be connected. Half-close needs `allowHalfOpen`; it is switched on here
 * because a socket without it would answer the peer's FIN with its own FIN and cut the other
 * direction short.
 */
export function pipe (a: Socket, b: Socket, opts: PipeOptions = {}): Promise<PipeResult> {
  return new Promise<PipeResult>(resolve => {
    const onBytes = opts.onBytes
    const signal = opts.signal
    let up = 0
    let down = 0
    let failure: Exclude<PipeOutcome, 'ok'> | null = null
    let error: Error | undefined
    let errorSide: 'a' | 'b' | undefined
    let open = 0

    const fail = (kind: Exclude<PipeOutcome, 'ok'>, side?: 'a' | 'b', err?: Error): void => {
      if (failure === null) {
        failure = kind
        if (err !== undefined) { error = err; errorSide = side }
      }
      reset(a)
      reset(b)
    }

    let finished = false
    const onAbort = (): void => { if (!finished) fail('aborted') }

    const finish = (): void => {
      finished = true
      signal?.removeEventListener('abort', onAbort)
      const result: PipeResult = { up, down, outcome: failure ?? 'ok' }
      if (error !== undefined) { result.error = error; result.errorSide = errorSide }
      resolve(result)
    }

    const watch = (sock: Socket, side: 'a' | 'b'): void => {
      sock.on('error', (err: Error) => { fail('error', side, err) })
      sock.on('timeout', () => { fail('timeout') })
      sock.on('close', () => {
        // A close after both halves ended is the normal end; anything else (destroy() from
        // outside, a handle closed under us) must not look like a clean FIN to the other peer.
        if (!(sock.readableEnded && sock.writableFinished)) fail('aborted')
        open -= 1
        if (open === 0) finish()
      })
    }

    const relay = (src: Socket, dst: Socket, dir: PipeDirection): void => {
      const side = readSideOf(src)
      if (side === undefined) {
        src.on('data', (chunk: Buffer) => {
          const n = chunk.length
          if (dir === 'up') up += n; else down += n
          if (onBytes !== undefined) onBytes(dir, n)
          if (!dst.write(chunk)) src.pause()
        })
        dst.on('drain', () => { src.resume() })
        // A 'data' listener starts the flow only on a socket never paused; one accepted paused
        // (pauseOnConnect) or paused by its owner before the relay must be resumed here.
        src.resume()
      } else {
        // src reads into relay-owned buffers (read-buffers.ts): a bulk chunk is a view of src's own
        // buffer, so src stays paused until a write that did not finish at once has been flushed.
        const flushed = (): void => {
          if (side.held && dst.writableLength === 0) { side.held = false; src.resume() }
        }
        const sink = (chunk: Buffer): void => {
          const n = chunk.length
          if (dir === 'up') up += n; else down += n
          if (onBytes !== undefined) onBytes(dir, n)
          dst.write(chunk, flushed)
          if (dst.writableLength > 0) { side.held = true; src.pause() }
        }
        const early = side.attach(sink)
        if (early !== null) sink(early)
        if (!side.held) src.resume()
      }
      // FIN from src: forward it. The socket closes itself once its own direction has ended too.
      src.on('end', () => { if (failure === null) dst.end() })
      // The FIN may have come before the relay started: a client that half-closes right after
      // connecting (sends nothing, then waits for the answer) while the upstream connect is still
      // in progress. An accepted socket reads on its own, so with nothing buffered its 'end' has
      // already been emitted and will not come again — forward that FIN now, or the destination
      // never sees it and the relay hangs until the idle timeout.
      if (src.readableEnded) dst.end()
    }

    let goneOnEntry = false
    for (const [sock, side] of [[a, 'a'], [b, 'b']] as const) {
      if (sock.destroyed) { goneOnEntry = true; continue }
      open += 1
      sock.allowHalfOpen = true
      sock.setNoDelay(true)
      if (opts.keepAliveMs !== 0) sock.setKeepAlive(true, opts.keepAliveMs ?? DEFAULT_KEEPALIVE_MS)
      // Socket timers are refreshed by every read and write on that socket, so any byte moving in
      // either direction keeps both alive: a chunk up is a read on a and a write on b.
      if (opts.idleTimeoutMs !== undefined && opts.idleTimeoutMs > 0) sock.setTimeout(opts.idleTimeoutMs)
      watch(sock, side)
    }
    if (open === 0) { finish(); return }
    // Gone before we started (e.g. the client hung up while we connected): cut the other one and
    // wait for its close.
    if (goneOnEntry) { fail('aborted'); return }

    if (signal !== undefined) {
      if (signal.aborted) { fail('aborted'); return }
      signal.addEventListener('abort', onAbort, { once: true })
    }
    if (opts.control !== undefined) opts.control.abort = onAbort
    relay(a, b, 'up')
    relay(b, a, 'down')
  })
}

/** RST instead of FIN: the peer learns the stream was cut, not completed. */
function reset (sock: Socket): void {
  if (sock.destroyed) return
  // Once end() has been called (a FIN forwarded), Node 20 can drop the handle without closing it when
  // asked to reset (libuv refuses a reset while the stream is shutting down; Node sets _handle = null
  // either way): the descriptor leaks, silently — 8 per 2,000 aborted tunnels in
  // test/netns/http-proxy-soak.test.ts. Such a socket is closed the ordinary way; its peer has had the FIN.
  if (sock.writableEnded) { sock.destroy(); return }
  try {
    sock.resetAndDestroy()
  } catch {
    // resetAndDestroy refuses non-TCP handles (e.g. a Unix socket in tests); a plain destroy is next best.
    sock.destroy()
  }
}
