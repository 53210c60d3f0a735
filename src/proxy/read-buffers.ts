/**
 * Sockets that read into buffers the relay owns (net's `onread` option) instead of into a fresh
 * 64 KiB allocation per read: both sockets of every dns-proxy forward and of every CONNECT tunnel.
 *
 * A plain net.Socket allocates a new ArrayBuffer for every read, wraps it in a Buffer, and leaves it
 * to the garbage collector once written on; at several gigabits a second that is the relay's largest
 * cost after the syscalls themselves (measured in the bench's namespaces: 4.1-4.3 → 6.2-7.3 Gbit/s
 * for one stream through the same forwarder). Here a socket reads into a buffer the relay owns,
 * and a chunk is written on from it without a copy; the socket stays paused while such a write is
 * still in flight, so the buffer is never overwritten under a pending write.
 *
 * The buffer adapts to the traffic. A socket starts on the small one, moves to a large one of its own
 * when a read fills the small one (bulk data is coming), and back when a read is small again. The
 * small buffer is one for all sockets: libuv reads one socket at a time and the callback copies the
 * chunk out (at most 4 KiB, from Buffer's pool) before any other socket reads, so an idle tunnel
 * holds no read buffer at all and a pending write never points into the shared one. Large is
 * 256 KiB: four times libuv's own read size, a quarter of the syscalls per byte (one stream through
 * a forwarder, bench namespaces: 7.3-8.1 Gbit/s at 64 KiB, 9.2-9.8 at 256 KiB). At most
 * LARGE_READ_BUDGET sockets hold one at a time (64 MiB); past that a bulk socket reads 64 KiB at a
 * time.
 */
import net from 'node:net'
import type { NetConnectOpts, Socket } from 'node:net'

/** the first buffer of every socket, and the one it returns to after a small read */
export const SMALL_READ = 4096
/** the buffer of a socket moving bulk data while the large ones are all taken: libuv's own read size */
export const MEDIUM_READ = 65_536
/** the buffer of a socket that is moving bulk data */
export const LARGE_READ = 262_144
/** sockets that may hold a LARGE_READ buffer at once (64 MiB in all) */
export const LARGE_READ_BUDGET = 256
/**
 * bytes a socket keeps before its relay starts, reading on meanwhile (a TLS ClientHello, a first request);
 * past this it is paused until the relay takes them. Every connection being set up may hold this much.
 */
export const EARLY_READ_LIMIT = 4 * SMALL_READ

let largeInUse = 0

/** the small buffer every socket reads into until it moves bulk data; never referenced by a write */
const SHARED_SMALL = Buffer.allocUnsafe(SMALL_READ)

/** How many sockets hold a large buffer now (for tests and diagnostics). */
export function largeReadsInUse (): number {
  return largeInUse
}

/**
 * The reading half of one socket. Until the relay attaches a sink, bytes read are kept (`pending`), so
 * nothing is lost between accept/connect and the relay, and the socket goes on reading, up to
 * EARLY_READ_LIMIT bytes: a client that resets or closes while the relay is still connecting upstream is
 * seen at once (a paused socket is not polled, so its reset would go unnoticed until the connect ended, up
 * to its timeout, with the upstream SYN and a descriptor held for nobody). Past the limit it is paused.
 */
export class ReadSide {
  socket: Socket | null = null
  /** the buffer the socket's next read goes into: SHARED_SMALL, or a medium or large one of its own */
  private buf: Buffer = SHARED_SMALL
  /** length of the last read, for the size decision that follows it */
  private last = 0
  /**
   * set while bytes read are still being written somewhere: a buffer of its own must not be read into
   * meanwhile (the socket is paused); a chunk from the shared one is a copy, so it needs no such care
   */
  held = false
  /** bytes read before a sink was attached, each chunk a copy, in order */
  private pending: Buffer[] | null = null
  private pendingBytes = 0
  private sink: ((chunk: Buffer) => void) | null = null

  /** the `onread` option for net.connect / new net.Socket */
  readonly onread = {
    buffer: (): Buffer => this.next(),
    // true: never 'pause by return value'; read() pauses the socket itself, which resume() undoes
    callback: (n: number, buf: Uint8Array): boolean => { this.read(n, buf as Buffer); return true }
  }

  private read (n: number, buf: Buffer): void {
    this.last = n
    // the shared buffer is read into by the next socket that has data: what it holds is copied out
    const chunk = buf === SHARED_SMALL ? Buffer.from(buf.subarray(0, n)) : buf.subarray(0, n)
    if (this.sink !== null) { this.sink(chunk); return }
    // No sink yet: every read before one goes into the shared small buffer (next() keeps it there), so the
    // chunk is a copy already and reading on cannot overwrite it.
    (this.pending ??= []).push(chunk)
    this.pendingBytes += n
    if (this.pendingBytes >= EARLY_READ_LIMIT) {
      this.held = true
      this.socket?.pause()
    }
  }

  /** Called by net after every read: the buffer for the next one. */
  private next (): Buffer {
    if (this.held || this.sink === null) return this.buf
    const size = this.buf.length
    const full = this.last === size
    if (full && size < LARGE_READ) {
      // Bulk data is coming: a large buffer if one is free, else (from small) a medium one.
      if (largeInUse < LARGE_READ_BUDGET) { largeInUse += 1; this.buf = Buffer.allocUnsafe(LARGE_READ) } else if (size === SMALL_READ) this.buf = Buffer.allocUnsafe(MEDIUM_READ)
    } else if (size > SMALL_READ && this.last > 0 && this.last < SMALL_READ) {
      if (size === LARGE_READ) largeInUse -= 1
      this.buf = SHARED_SMALL
    }
    return this.buf
  }

  /** The socket closed: its large buffer, if it had one, no longer counts against the budget. */
  release (): void {
    if (this.buf.length === LARGE_READ) largeInUse -= 1
    this.buf = EMPTY
  }

  /**
   * From now on every chunk goes to `sink`, which sets `held` (and pauses the socket) while a write
   * of it is unfinished. Returns the bytes read before, if any (one buffer): the caller passes them to
   * its sink first, then resumes the socket unless held.
   */
  attach (sink: (chunk: Buffer) => void): Buffer | null {
    this.sink = sink
    const early = this.pending
    this.pending = null
    this.pendingBytes = 0
    // A socket paused at the limit stays paused until the caller has written them on.
    this.held = false
    if (early === null) return null
    return early.length === 1 ? early[0] as Buffer : Buffer.concat(early)
  }

  /** bytes read and kept before a sink was attached (for tests and diagnostics) */
  get earlyBytes (): number {
    return this.pendingBytes
  }
}

/** what a closed socket's side points at: nothing will be read into it */
const EMPTY = Buffer.alloc(0)

const sides = new WeakMap<Socket, ReadSide>()

/** 'close' of every socket with a read side: one function for all (not a closure per socket) */
function releaseSide (this: Socket): void {
  sides.get(this)?.release()
}

function track (socket: Socket, side: ReadSide): void {
  side.socket = socket
  sides.set(socket, side)
  socket.on('close', releaseSide)
}

/** The ReadSide of a socket made by connectOwned/adoptAccepted; undefined for any other socket. */
export function readSideOf (socket: Socket): ReadSide | undefined {
  return sides.get(socket)
}

/** net.connect whose socket reads into relay-owned buffers (see ReadSide). */
export function connectOwned (options: NetConnectOpts): Socket {
  const side = new ReadSide()
  const socket = net.connect({ ...options, onread: side.onread })
  track(socket, side)
  return socket
}

interface HandleCarrier {
  _handle?: { useUserBuffer?: (buf: Uint8Array) => void } | null
}

/**
 * The three properties through which a net.Socket reads into a user buffer (what its `onread` option sets,
 * Node's internal kBuffer, kBufferGen and kBufferCb symbols; every Socket has them, null without `onread`),
 * found by their descriptions on the first socket adopted; null when this Node's sockets have none of them.
 */
interface UserBufferKeys { readonly buffer: symbol, readonly generator: symbol, readonly callback: symbol }
let userBufferKeys: UserBufferKeys | null | undefined

function userBufferKeysOf (socket: Socket): UserBufferKeys | null {
  if (userBufferKeys !== undefined) return userBufferKeys
  const own = Object.getOwnPropertySymbols(socket)
  const find = (description: string): symbol | undefined => own.find((k) => k.description === description)
  const buffer = find('kBuffer')
  const generator = find('kBufferGen')
  const callback = find('kBufferCb')
  userBufferKeys = buffer !== undefined && generator !== undefined && callback !== undefined ? { buffer, generator, callback } : null
  return userBufferKeys
}

/**
 * Makes an accepted connection read into relay-owned buffers, in place. Node accepts connections only onto
 * ordinary sockets; this gives the accepted one what the `onread` option would have given it (the user-buffer
 * properties, and the handle's user buffer), so the socket the server counts, times out and closes is the one
 * the relay reads (an earlier version moved the handle onto a second Socket and kept the accepted one as a
 * stand-in: ~1 KiB more per open connection). It reads from now on, keeping what comes until the relay
 * attaches (ReadSide). Only a socket nothing has been read from in JavaScript qualifies: one accepted by a
 * server with `pauseOnConnect: true`, or the socket of an http.Server 'connect' event, taken in the event
 * itself (the request head was parsed natively, what followed it is the event's `head`).
 *
 * Where that cannot be done (not a TCP handle, bytes already buffered, a Node whose sockets differ), the
 * socket is left as it is and the relay reads it the ordinary way. Returns the socket.
 */
export function adoptAccepted (accepted: Socket, allowHalfOpen = true): Socket {
  const handle = (accepted as unknown as HandleCarrier)._handle
  if (handle === null || handle === undefined || typeof handle.useUserBuffer !== 'function' || accepted.destroyed || accepted.readableLength > 0) {
    return accepted
  }
  const keys = userBufferKeysOf(accepted)
  const fields = accepted as unknown as Record<symbol, unknown>
  if (keys === null || fields[keys.buffer] !== null) return accepted
  const side = new ReadSide()
  const first = side.onread.buffer()
  fields[keys.buffer] = first
  fields[keys.generator] = side.onread.buffer
  fields[keys.callback] = side.onread.callback
  handle.useUserBuffer(first)
  accepted.allowHalfOpen = allowHalfOpen
  track(accepted, side)
  // read on (a socket accepted paused is not reading yet): a reset before the relay starts is seen
  accepted.read(0)
  return accepted
}

/**
 * Reads and drops whatever the peer still sends (a refused client that keeps writing): on a socket of
 * adoptAccepted/connectOwned the bytes go nowhere instead of waiting for a relay that never comes.
 */
export function discardReads (socket: Socket): void {
  const side = sides.get(socket)
  if (side !== undefined) side.attach(() => {})
  socket.resume()
}
