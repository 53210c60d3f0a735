/**
 * dns-proxy mode: one TCP listener per `<port> <ip-or-hostname> [<targetport>]` line, relaying each
 * accepted connection to the target from EGRESS_SOURCE (the OpenShift egress-dns-proxy image did
 * this with haproxy).
 *
 * Name targets follow the daemon's own resolver: the forwarder subscribes with watch() and keeps
 * the current address set in memory, so accepting a connection never waits on DNS. Each new
 * connection takes the next address round robin; when connecting fails (refused, timeout) the next
 * address is tried before the client is reset. An address that just failed is tried last for a
 * while (passive only: there are no health probes). Established connections keep their
 * destination when the answer changes, and a reload (DnsProxy.update) never drops them.
 *
 * A name without a usable address (not resolved yet, NXDOMAIN) does not stop the listener:
 * connections are held for up to `holdMs` waiting for the first answer (the usual case is a
 * client that connects while the daemon is still starting), then reset; ready() is false meanwhile.
 */
import net from 'node:net'
import type { AddressInfo, Server, Socket } from 'node:net'
import type { Logger } from 'pino'
import type { DnsForward, IpAddress } from '../config/types.js'
import { ApplyError } from '../errors.js'
import type { Metrics, Outcome } from '../observe/metrics.js'
import { connectionCounters } from './connection-counters.js'
import { pipe } from './pipe.js'
import { adoptAccepted, connectOwned } from './read-buffers.js'
import type { PipeControl, PipeResult } from './pipe.js'

// ---- the resolver, as the forwarder sees it ------------------------------------------------------

/** An answer as the resolver holds it; `stale` = served past its TTL because every nameserver failed. */
export interface WatchedAnswer {
  readonly addresses: readonly IpAddress[]
  readonly stale: boolean
}

/**
 * The daemon's resolver (src/dns/resolver.ts). It refreshes watched names in the background
 * before they expire and keeps the last good answer while servers fail.
 */
export interface WatchingResolver {
  resolve (name: string): Promise<{ readonly addresses: readonly IpAddress[] }>
  /** onChange runs whenever the answer for name changes; returns the unsubscribe function */
  watch (name: string, onChange: (r: WatchedAnswer) => void): () => void
  /** the answer held now, without any lookup */
  peek (name: string): WatchedAnswer | undefined
}

// ---- options and results ------------------------------------------------------------------------

export interface DnsForwarderOptions {
  /** per address attempt; then the next address is tried. Default 10 s. */
  connectTimeoutMs?: number
  /**
   * reset a relay when nothing moved either way for this long. Default 1 h: database sessions sit
   * idle for long stretches (the old haproxy cut them after 60 s).
   */
  idleTimeoutMs?: number
  /** TCP keepalive initial delay on both sockets. Default 60 s. */
  keepAliveMs?: number
  /** how long a connection accepted while the name has no address waits for one. Default 5 s. */
  holdMs?: number
  /** connections held at once while the name has no address; beyond this they are reset at once. Default 256. */
  maxHeld?: number
  /** after a failed connect an address is tried last for this long. Default 10 s. */
  failurePenaltyMs?: number
}

export interface DnsForwarderDeps {
  forward: DnsForward
  /** address the listener binds ('' or '::' = every address) */
  listenHost: string
  /** EGRESS_SOURCE: outgoing connections are bound to it; addresses of the other family are unusable. null = let the kernel pick. */
  sourceAddress: IpAddress | null
  /** needed only for name targets */
  resolver?: WatchingResolver
  logger: Logger
  metrics: Metrics
  options?: DnsForwarderOptions
}

export interface DnsForwarderStats {
  /** the configured listen port (the metrics' `listener` label) */
  readonly listener: string
  /** where the listener is bound, null before listen() / after close() */
  readonly bound: AddressInfo | null
  /** `name:port` or `ip:port` */
  readonly target: string
  /** the addresses new connections go to now */
  readonly addresses: readonly string[]
  readonly stale: boolean
  readonly ready: boolean
  readonly accepted: number
  readonly active: number
  readonly held: number
  /** address attempts that failed (each tried address counts) */
  readonly connectFailures: number
}

export interface DnsForwarder {
  readonly forward: DnsForward
  listen (): Promise<AddressInfo>
  /** stop accepting; connections finish for up to drainMs (Infinity = as long as they take), then are reset */
  close (drainMs: number): Promise<void>
  /** true when new connections have an address to go to */
  ready (): boolean
  stats (): DnsForwarderStats
  /**
   * Point new connections at another target (same listen port) without closing the listener;
   * established connections keep theirs. Used by DnsProxy.update on reload.
   */
  retarget (forward: DnsForward): void
}

const DEFAULTS: Required<DnsForwarderOptions> = {
  connectTimeoutMs: 10_000,
  idleTimeoutMs: 3_600_000,
  keepAliveMs: 60_000,
  holdMs: 5_000,
  maxHeld: 256,
  failurePenaltyMs: 10_000
}

const MODE = 'dns-proxy'

/**
 * One accepted client connection, from accept to close. Kept small and free of promises and event
 * targets: at thousands of new connections a second every object made per connection shows.
 */
interface Conn {
  readonly client: Socket
  /** the client's address for the debug log; captured at accept only while debug logging is on */
  readonly clientText: string | null
  readonly startedAt: number
  /** set once the connection has been cut (drain time up, forwarder closing while it is held) */
  cut: boolean
  /** what cutting does in the phase the connection is in now (held, connecting, relaying) */
  onCut: (() => void) | null
  holdTimer: NodeJS.Timeout | null
}

/** An error before pipe() takes over only means "gone"; the code that owns the socket notices. */
const ignore = (): void => {}

type Attempt =
  | { readonly socket: Socket }
  | { readonly failure: 'refused' | 'timeout' | 'error' | 'aborted', readonly error: Error }

// ---- pure helpers -------------------------------------------------------------------------------

export function targetText (forward: DnsForward): string {
  const t = forward.target
  const host = t.kind === 'name' ? t.name : (t.address.family === 6 ? `[${t.address.address}]` : t.address.address)
  return `${host}:${forward.targetPort}`
}

function sameTarget (x: DnsForward, y: DnsForward): boolean {
  if (x.targetPort !== y.targetPort) return false
  if (x.target.kind === 'name') return y.target.kind === 'name' && x.target.name === y.target.name
  return y.target.kind === 'ip' && x.target.address.address === y.target.address.address
}

function sameAddresses (x: readonly IpAddress[], y: readonly IpAddress[]): boolean {
  return x.length === y.length && x.every((a, i) => a.address === y[i]?.address)
}

function needsResolver (f: DnsForward, resolver: WatchingResolver | undefined): void {
  if (f.target.kind === 'name' && resolver === undefined) throw new TypeError(`forward line ${f.line}: name target ${f.target.name} needs a resolver`)
}

function endpointText (address: string | undefined, port: number | undefined): string {
  if (address === undefined) return 'unknown'
  return address.includes(':') ? `[${address}]:${port ?? 0}` : `${address}:${port ?? 0}`
}

/**
 * The addresses to try for one connection: the addresses that did not fail recently first, taken
 * round robin among themselves (connection number `start` begins at the (start mod n)-th of them),
 * then the ones that failed recently, in the same rotation (still tried: a penalty is a guess, not a
 * verdict). Rotating among the healthy ones only keeps the load even while one address is down:
 * rotating over all of them would hand a down address's turn to its neighbour, doubling its share.
 */
export function attemptOrder (addresses: readonly IpAddress[], start: number, penalised: (a: IpAddress) => boolean): IpAddress[] {
  const fresh: IpAddress[] = []
  const tired: IpAddress[] = []
  for (const a of addresses) {
    if (penalised(a)) tired.push(a); else fresh.push(a)
  }
  return rotate(fresh, start).concat(rotate(tired, start))
}

function rotate<T> (list: readonly T[], start: number): T[] {
  if (list.length === 0) return []
  const k = start % list.length
  return list.slice(k).concat(list.slice(0, k))
}

// ---- one forwarder ------------------------------------------------------------------------------

export function createDnsForwarder (deps: DnsForwarderDeps): DnsForwarder {
  const opts = { ...DEFAULTS, ...deps.options }
  const { metrics, sourceAddress } = deps
  let forward = deps.forward
  const listener = String(forward.port)
  needsResolver(forward, deps.resolver)
  const log = deps.logger.child({ mode: MODE, listener })

  const labels = { mode: MODE, listener }
  const counters = connectionCounters(metrics, labels, () => conns.size)

  let server: Server | null = null
  let bound: AddressInfo | null = null
  let accepting = false
  let closing: Promise<void> | null = null

  let addresses: readonly IpAddress[] = []
  let stale = false
  let unwatch: (() => void) | null = null
  /** bumped on every retarget, so late answers for an old name are ignored */
  let generation = 0
  let next = 0
  const failedAt = new Map<string, number>()

  const conns = new Set<Conn>()
  const held = new Set<Conn>()
  let accepted = 0
  let connectFailures = 0
  /** resolves close()'s wait once the last connection has finished */
  let drained: (() => void) | null = null


  // -- the address set ----------------------------------------------------------------------------

  const setAddresses = (all: readonly IpAddress[], isStale: boolean): void => {
    // EGRESS_SOURCE has one family; addresses of the other cannot be reached from it.
    const usable = sourceAddress === null ? all : all.filter(a => a.family === sourceAddress.family)
    if (isStale !== stale) {
      stale = isStale
      if (isStale) log.warn({ target: targetText(forward) }, 'serving the last good DNS answer: every nameserver fails')
      else log.info({ target: targetText(forward) }, 'DNS answer fresh again')
    }
    if (sameAddresses(usable, addresses)) return
    addresses = usable
    for (const key of failedAt.keys()) if (!usable.some(a => a.address === key)) failedAt.delete(key)
    if (usable.length === 0) {
      const dropped = all.length - usable.length
      log.warn({ target: targetText(forward), unusable: dropped }, dropped > 0
        ? 'no address of the source address family: new connections are held, then reset'
        : 'no address: new connections are held, then reset')
    } else {
      log.info({ target: targetText(forward), addresses: usable.map(a => a.address) }, 'destination addresses')
      releaseHeld()
    }
  }

  const track = (): void => {
    unwatch?.()
    unwatch = null
    generation += 1
    const gen = generation
    const target = forward.target
    if (target.kind === 'ip') { setAddresses([target.address], false); return }
    const resolver = deps.resolver as WatchingResolver
    const name = target.name
    unwatch = resolver.watch(name, r => { if (gen === generation) setAddresses(r.addresses, r.stale) })
    const now = resolver.peek(name)
    if (now !== undefined) { setAddresses(now.addresses, now.stale); return }
    setAddresses([], false)
    // Nothing cached yet: ask once so the first answer does not wait for a refresh cycle. Retries
    // with backoff are the resolver's job; watch() brings whatever it finds later.
    resolver.resolve(name).then(r => {
      if (gen === generation && addresses.length === 0) setAddresses(r.addresses, false)
    }, (err: unknown) => {
      if (gen === generation) log.warn({ target: name, err }, 'name does not resolve yet; the listener stays up and not ready')
    })
  }

  const penalised = (a: IpAddress): boolean => {
    const at = failedAt.get(a.address)
    if (at === undefined) return false
    if (Date.now() - at < opts.failurePenaltyMs) return true
    failedAt.delete(a.address)
    return false
  }

  // -- connections --------------------------------------------------------------------------------

  interface Detail { destination?: IpAddress, port?: number, up?: number, down?: number, err?: unknown, attempts?: number }

  const finish = (conn: Conn, outcome: Outcome, detail: Detail): void => {
    if (!conns.delete(conn)) return
    held.delete(conn)
    conn.onCut = null
    if (conn.holdTimer !== null) clearTimeout(conn.holdTimer)
    counters.outcome(outcome)
    // Built only when it is written: this runs once per connection.
    if (log.isLevelEnabled('debug')) {
      log.debug({
        client: conn.clientText ?? 'unknown',
        destination: detail.destination === undefined ? null : endpointText(detail.destination.address, detail.port),
        up: detail.up ?? 0,
        down: detail.down ?? 0,
        durationMs: Date.now() - conn.startedAt,
        outcome,
        attempts: detail.attempts ?? 0,
        err: detail.err
      }, 'connection closed')
    }
    if (conns.size === 0 && drained !== null) {
      const wake = drained
      drained = null
      wake()
    }
  }

  const resetClient = (conn: Conn): void => {
    if (!conn.client.destroyed) conn.client.resetAndDestroy()
  }

  /** Cuts the connection wherever it is (held, connecting, relaying). */
  const cut = (conn: Conn): void => {
    if (conn.cut) return
    conn.cut = true
    conn.onCut?.()
  }

  const onConnection = (client: Socket): void => {
    accepted += 1
    counters.accepted()
    const conn: Conn = {
      client,
      clientText: log.isLevelEnabled('debug') ? endpointText(client.remoteAddress, client.remotePort) : null,
      startedAt: Date.now(),
      cut: false,
      onCut: null,
      holdTimer: null
    }
    conns.add(conn)
    // Until pipe() takes over, a client error only means "gone"; the attempt loop notices.
    client.on('error', ignore)
    if (!accepting) { resetClient(conn); finish(conn, 'aborted', {}); return }
    if (addresses.length > 0) { dispatch(conn); return }
    hold(conn)
  }

  const hold = (conn: Conn): void => {
    if (held.size >= opts.maxHeld) { resetClient(conn); finish(conn, 'unresolved', {}); return }
    held.add(conn)
    conn.holdTimer = setTimeout(() => {
      resetClient(conn)
      finish(conn, 'unresolved', {})
    }, opts.holdMs)
    conn.holdTimer.unref()
    const gone = (): void => { if (held.has(conn)) finish(conn, 'aborted', {}) }
    conn.client.once('close', gone)
    conn.onCut = () => { if (held.has(conn)) { resetClient(conn); finish(conn, 'aborted', {}) } }
  }

  const releaseHeld = (): void => {
    if (!accepting) return
    for (const conn of [...held]) {
      held.delete(conn)
      conn.onCut = null
      if (conn.holdTimer !== null) { clearTimeout(conn.holdTimer); conn.holdTimer = null }
      dispatch(conn)
    }
  }

  /** Connects to the next address (then the others), then relays. */
  const dispatch = (conn: Conn): void => {
    const port = forward.targetPort
    // One address needs no ordering (and most forwards have one): skip the arrays attemptOrder builds.
    const order = addresses.length === 1 ? addresses : attemptOrder(addresses, next, penalised)
    // A plain counter, taken modulo the number of candidates in attemptOrder (which varies with
    // the penalties); wrapped long before it could lose integer precision.
    next = next >= 0x7fffffff ? 0 : next + 1
    let failure: Outcome = 'unresolved'
    let error: Error | undefined
    let attempts = 0
    const step = (): void => {
      const address = order[attempts]
      if (address === undefined || conn.client.destroyed || conn.cut) {
        const clientGone = conn.client.destroyed || conn.cut
        resetClient(conn)
        finish(conn, clientGone ? 'aborted' : failure, { attempts, err: error })
        return
      }
      attempts += 1
      connectOnce(conn, address, port, attempt => {
        if ('socket' in attempt) {
          failedAt.delete(address.address)
          relay(conn, attempt.socket, address, port, attempts)
          return
        }
        failure = attempt.failure
        error = attempt.error
        if (attempt.failure === 'aborted') {
          resetClient(conn)
          finish(conn, 'aborted', { attempts, err: error })
          return
        }
        connectFailures += 1
        failedAt.set(address.address, Date.now())
        if (log.isLevelEnabled('debug')) log.debug({ client: conn.clientText ?? 'unknown', destination: endpointText(address.address, port), err: attempt.error }, `connect ${attempt.failure}`)
        step()
      })
    }
    step()
  }

  const connectOnce = (conn: Conn, address: IpAddress, port: number, done: (a: Attempt) => void): void => {
    const client = conn.client
    const sock = connectOwned({
      host: address.address,
      port,
      family: address.family,
      ...(sourceAddress !== null ? { localAddress: sourceAddress.address } : {}),
      allowHalfOpen: true
    })
    // Stays for the socket's life: an error between here and pipe() must not be unhandled.
    sock.on('error', ignore)
    const settle = (r: Attempt): void => {
      clearTimeout(timer)
      conn.onCut = null
      client.removeListener('close', onAbort)
      sock.removeListener('connect', onConnect)
      sock.removeListener('error', onError)
      if (!('socket' in r)) sock.destroy()
      done(r)
    }
    const onConnect = (): void => { settle({ socket: sock }) }
    const onError = (err: NodeJS.ErrnoException): void => {
      settle({ failure: err.code === 'ECONNREFUSED' ? 'refused' : 'error', error: err })
    }
    const onAbort = (): void => { settle({ failure: 'aborted', error: new Error('client gone or forwarder closed while connecting') }) }
    const timer = setTimeout(() => {
      settle({ failure: 'timeout', error: new Error(`connect to ${endpointText(address.address, port)} timed out after ${opts.connectTimeoutMs} ms`) })
    }, opts.connectTimeoutMs)
    timer.unref()
    sock.once('connect', onConnect)
    sock.once('error', onError)
    conn.onCut = onAbort
    client.on('close', onAbort)
  }

  const relay = (conn: Conn, upstream: Socket, destination: IpAddress, port: number, attempts: number): void => {
    const control: PipeControl = {}
    conn.onCut = () => { control.abort?.() }
    pipe(conn.client, upstream, {
      idleTimeoutMs: opts.idleTimeoutMs,
      keepAliveMs: opts.keepAliveMs,
      control,
      onBytes: counters.bytes
    }).then((result: PipeResult) => {
      finish(conn, result.outcome, {
        destination,
        port,
        up: result.up,
        down: result.down,
        attempts,
        err: result.error === undefined ? undefined : { side: result.errorSide === 'a' ? 'client' : 'destination', code: (result.error as NodeJS.ErrnoException).code, message: result.error.message }
      })
    }, ignore)
  }

  // -- lifecycle ----------------------------------------------------------------------------------

  const listen = async (): Promise<AddressInfo> => {
    if (server !== null) throw new Error(`forward line ${forward.line}: listen() called twice`)
    // pauseOnConnect: nothing is read before adoptAccepted moves the connection onto a socket that
    // reads into relay-owned buffers (read-buffers.ts). No noDelay here: it would set TCP_NODELAY on
    // the accepted socket object, and pipe() sets it again on the adopted one (the same descriptor).
    const srv = net.createServer({ allowHalfOpen: true, pauseOnConnect: true }, accepted => { onConnection(adoptAccepted(accepted)) })
    server = srv
    try {
      await new Promise<void>((resolve, reject) => {
        srv.once('error', reject)
        srv.listen({ host: deps.listenHost === '' ? undefined : deps.listenHost, port: forward.port }, () => {
          srv.removeListener('error', reject)
          resolve()
        })
      })
    } catch (err) {
      server = null
      throw new ApplyError(`listen on ${endpointText(deps.listenHost === '' ? '*' : deps.listenHost, forward.port)} (EGRESS_DNS_PROXY_DESTINATION line ${forward.line})`, [], err)
    }
    srv.on('error', (err: Error) => { log.error({ err }, 'listener error') })
    bound = srv.address() as AddressInfo
    accepting = true
    counters.attach()
    try {
      track()
    } catch (err) {
      // The resolver refused the name (it should not: names are validated with the config).
      accepting = false
      counters.detach()
      srv.close()
      server = null
      bound = null
      throw new ApplyError(`watch ${targetText(forward)} (EGRESS_DNS_PROXY_DESTINATION line ${forward.line})`, [`listener ${forward.port}`], err)
    }
    log.info({ bound: endpointText(bound.address, bound.port), target: targetText(forward) }, 'forwarding')
    return bound
  }

  const cutTimers: NodeJS.Timeout[] = []

  /** After ms, reset whatever is still open. A later close() with a shorter drain cuts sooner. */
  const cutAfter = (ms: number): void => {
    if (!Number.isFinite(ms)) return
    const timer = setTimeout(() => {
      if (conns.size === 0) return
      log.warn({ connections: conns.size }, 'drain time is up: resetting the connections left')
      for (const conn of [...conns]) cut(conn)
    }, Math.max(0, ms))
    cutTimers.push(timer)
  }

  const close = (drainMs: number): Promise<void> => {
    cutAfter(drainMs)
    if (closing !== null) return closing
    closing = (async () => {
      accepting = false
      unwatch?.()
      unwatch = null
      generation += 1
      const srv = server
      // close() unbinds the port at once; its callback waits for every connection to end.
      const serverClosed = srv === null
        ? Promise.resolve()
        : new Promise<void>(resolve => { srv.close(() => { resolve() }) })
      // Held clients have no destination yet; during a shutdown they are better off retrying elsewhere.
      for (const conn of [...held]) cut(conn)
      if (conns.size > 0) log.info({ connections: conns.size, drainMs }, 'draining')
      if (conns.size > 0) await new Promise<void>(resolve => { drained = resolve })
      for (const timer of cutTimers) clearTimeout(timer)
      await serverClosed
      bound = null
      counters.detach()
      log.info('listener closed')
    })()
    return closing
  }

  const retarget = (f: DnsForward): void => {
    if (f.port !== forward.port) throw new TypeError(`retarget cannot move listener ${forward.port} to ${f.port}`)
    needsResolver(f, deps.resolver)
    const changed = !sameTarget(f, forward)
    forward = f
    if (!changed || !accepting) return
    log.info({ target: targetText(f) }, 'new connections go to a new target')
    failedAt.clear()
    track()
  }

  return {
    get forward () { return forward },
    listen,
    close,
    ready: () => accepting && addresses.length > 0,
    retarget,
    stats: () => ({
      listener,
      bound,
      target: targetText(forward),
      addresses: addresses.map(a => a.address),
      stale,
      ready: accepting && addresses.length > 0,
      accepted,
      active: conns.size,
      held: held.size,
      connectFailures
    })
  }
}

// ---- every forward of a configuration -----------------------------------------------------------

export interface DnsProxyDeps extends Omit<DnsForwarderDeps, 'forward'> {
  forwards: readonly DnsForward[]
}

export interface DnsProxy {
  /** opens every listener; if one fails the others are closed again and an ApplyError is thrown */
  listen (): Promise<void>
  /**
   * Reload: listeners of removed forwards stop accepting (their connections run on), new ones are
   * opened, a forward whose port stays keeps its listener (new connections follow a changed target).
   * Rejects with an ApplyError naming the listeners that could not be opened; the rest is applied.
   */
  update (forwards: readonly DnsForward[]): Promise<void>
  /** every listener has an address to send new connections to */
  ready (): boolean
  stats (): DnsForwarderStats[]
  /** stop everything, including listeners retired by update(); connections get drainMs to finish */
  close (drainMs: number): Promise<void>
}

/**
 * Identity of a forward across reloads: its listen port. Port 0 (any free port) never comes from a
 * validated configuration, only from tests, and such forwards are told apart by line.
 */
function forwardKey (f: DnsForward): string {
  return f.port === 0 ? `0#${f.line}` : String(f.port)
}

export function createDnsProxy (deps: DnsProxyDeps): DnsProxy {
  const active = new Map<string, DnsForwarder>()
  /** removed by a reload but still carrying connections */
  const retiring = new Set<DnsForwarder>()
  let closed = false

  const make = (forward: DnsForward): DnsForwarder => createDnsForwarder({ ...deps, forward })

  const retire = (fw: DnsForwarder): void => {
    retiring.add(fw)
    // Established connections are never dropped by a reload: no deadline.
    void fw.close(Infinity).then(() => { retiring.delete(fw) })
  }

  /** Opens listeners for `forwards`; returns the ApplyErrors of those that failed. */
  const open = async (forwards: readonly DnsForward[]): Promise<unknown[]> => {
    const failures: unknown[] = []
    for (const f of forwards) {
      const fw = make(f)
      try {
        await fw.listen()
        active.set(forwardKey(f), fw)
      } catch (err) {
        failures.push(err)
      }
    }
    return failures
  }

  return {
    async listen () {
      const failures = await open(deps.forwards)
      if (failures.length === 0) return
      const rolledBack = [...active.values()].map(fw => `listener ${fw.forward.port}`)
      await Promise.all([...active.values()].map(fw => fw.close(0)))
      active.clear()
      const first = failures[0]
      throw new ApplyError(first instanceof ApplyError ? first.step : 'dns-proxy listeners', rolledBack, first instanceof ApplyError ? first.cause : first)
    },

    async update (forwards) {
      if (closed) throw new Error('dns-proxy is closed')
      const wanted = new Map(forwards.map(f => [forwardKey(f), f]))
      for (const [key, fw] of active) {
        const f = wanted.get(key)
        if (f === undefined) {
          active.delete(key)
          retire(fw)
        } else {
          fw.retarget(f)
        }
      }
      const failures = await open(forwards.filter(f => !active.has(forwardKey(f))))
      if (failures.length === 0) return
      const steps = failures.map(e => (e instanceof ApplyError ? e.step : String(e)))
      throw new ApplyError(steps.join('; '), [], failures[0] instanceof ApplyError ? failures[0].cause : failures[0])
    },

    ready: () => [...active.values()].every(fw => fw.ready()),

    stats: () => [...active.values()].map(fw => fw.stats()),

    async close (drainMs) {
      closed = true
      const all = [...active.values(), ...retiring]
      active.clear()
      await Promise.all(all.map(fw => fw.close(drainMs)))
    }
  }
}
