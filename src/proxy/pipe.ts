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

/** The relay a socket belongs to, on the socket: the event listeners below are shared by every relay. */
const kRelay = Symbol('pipe relay')

type RelaySocket = Socket & { [kRelay]?: Relay }

/**
 * One relay's state. Its sockets' listeners are module functions that find it through the socket (`this` of an
 * event listener is the emitter): an idle tunnel holds this object and the two read sinks, not a closure and a
 * context per listener (a CONNECT tunnel held 34 closures and 17 contexts, 2.7 KiB of its 8.1 KiB of heap).
 */
class Relay {
  up = 0
  down = 0
  failure: Exclude<PipeOutcome, 'ok'> | null = null
  error: Error | undefined
  errorSide: 'a' | 'b' | undefined
  /** sockets still open */
  open = 0
  finished = false

  constructor (
    readonly a: Socket,
    readonly b: Socket,
    readonly onBytes: PipeOptions['onBytes'],
    readonly signal: AbortSignal | undefined,
    readonly resolve: (result: PipeResult) => void
  ) {}

  other (sock: Socket): Socket {
    return sock === this.a ? this.b : this.a
  }

  count (src: Socket, n: number): void {
    const dir: PipeDirection = src === this.a ? 'up' : 'down'
    if (dir === 'up') this.up += n; else this.down += n
    if (this.onBytes !== undefined) this.onBytes(dir, n)
  }

  fail (kind: Exclude<PipeOutcome, 'ok'>, side?: 'a' | 'b', err?: Error): void {
    if (this.failure === null) {
      this.failure = kind
      if (err !== undefined) { this.error = err; this.errorSide = side }
    }
    reset(this.a)
    reset(this.b)
  }

  #abort: (() => void) | null = null

  /** the callback for the abort signal and PipeControl, made the first time one of them is given */
  aborter (): () => void {
    return (this.#abort ??= () => { if (!this.finished) this.fail('aborted') })
  }

  finish (): void {
    this.finished = true
    if (this.#abort !== null) this.signal?.removeEventListener('abort', this.#abort)
    const result: PipeResult = { up: this.up, down: this.down, outcome: this.failure ?? 'ok' }
    if (this.error !== undefined) { result.error = this.error; result.errorSide = this.errorSide }
    this.resolve(result)
  }

  /** src → dst, through src's read side when it has one (read-buffers.ts), else through its 'data' events. */
  relay (src: Socket, dst: Socket): void {
    const side = readSideOf(src)
    if (side === undefined) {
      src.on('data', onData)
      dst.on('drain', onDrain)
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
        this.count(src, chunk.length)
        dst.write(chunk, flushed)
        if (dst.writableLength > 0) { side.held = true; src.pause() }
      }
      const early = side.attach(sink)
      if (early !== null) sink(early)
      if (!side.held) src.resume()
    }
    // FIN from src: forward it. The socket closes itself once its own direction has ended too.
    src.on('end', onEnd)
    // The FIN may have come before the relay started: a client that half-closes right after
    // connecting (sends nothing, then waits for the answer) while the upstream connect is still
    // in progress. An accepted socket reads on its own, so with nothing buffered its 'end' has
    // already been emitted and will not come again — forward that FIN now, or the destination
    // never sees it and the relay hangs until the idle timeout.
    if (src.readableEnded) dst.end()
  }
}

const relayOf = (sock: Socket): Relay => (sock as RelaySocket)[kRelay] as Relay

function onError (this: Socket, err: Error): void {
  const r = relayOf(this)
  r.fail('error', this === r.a ? 'a' : 'b', err)
}

function onTimeout (this: Socket): void {
  relayOf(this).fail('timeout')
}

function onClose (this: Socket): void {
  const r = relayOf(this)
  // A close after both halves ended is the normal end; anything else (destroy() from
  // outside, a handle closed under us) must not look like a clean FIN to the other peer.
  if (!(this.readableEnded && this.writableFinished)) r.fail('aborted')
  r.open -= 1
  if (r.open === 0) r.finish()
}

function onEnd (this: Socket): void {
  const r = relayOf(this)
  if (r.failure === null) r.other(this).end()
}

/** a chunk from a socket without a read side */
function onData (this: Socket, chunk: Buffer): void {
  const r = relayOf(this)
  r.count(this, chunk.length)
  if (!r.other(this).write(chunk)) this.pause()
}

/** on the destination of a socket without a read side: its source may read again */
function onDrain (this: Socket): void {
  relayOf(this).other(this).resume()
}

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
    const signal = opts.signal
    const r = new Relay(a, b, opts.onBytes, signal, resolve)
    let goneOnEntry = false
    for (const sock of [a, b]) {
      if (sock.destroyed) { goneOnEntry = true; continue }
      r.open += 1
      ;(sock as RelaySocket)[kRelay] = r
      sock.allowHalfOpen = true
      sock.setNoDelay(true)
      if (opts.keepAliveMs !== 0) sock.setKeepAlive(true, opts.keepAliveMs ?? DEFAULT_KEEPALIVE_MS)
      // Socket timers are refreshed by every read and write on that socket, so any byte moving in
      // either direction keeps both alive: a chunk up is a read on a and a write on b.
      if (opts.idleTimeoutMs !== undefined && opts.idleTimeoutMs > 0) sock.setTimeout(opts.idleTimeoutMs)
      sock.on('error', onError)
      sock.on('timeout', onTimeout)
      sock.on('close', onClose)
    }
    if (r.open === 0) { r.finish(); return }
    // Gone before we started (e.g. the client hung up while we connected): cut the other one and
    // wait for its close.
    if (goneOnEntry) { r.fail('aborted'); return }

    if (signal !== undefined) {
      if (signal.aborted) { r.fail('aborted'); return }
      signal.addEventListener('abort', r.aborter(), { once: true })
    }
    if (opts.control !== undefined) opts.control.abort = r.aborter()
    r.relay(a, b)
    r.relay(b, a)
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
