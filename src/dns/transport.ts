/**
 * One DNS question, asked of the configured nameservers the way glibc's res_send asks: each server
 * in turn, `attempts` rounds, a per-try timeout, SERVFAIL/REFUSED move on to the next server, a
 * truncated UDP answer is asked again over TCP of the same server.
 *
 * Spoofing defences (RFC 5452): every try uses a fresh UDP socket — a fresh kernel-chosen random
 * source port — connected to the server, so the kernel itself drops datagrams from any other
 * address or port; a random 16-bit ID that is never handed out twice while in flight; and an
 * answer is taken only when ID, the single question (name case-insensitively, type, class) and the
 * sender's address and port all match. Anything else is counted, logged at debug, and ignored: the
 * try keeps waiting for the real answer until its timeout.
 *
 * A socket per try costs a few syscalls; the resolver caches, so this runs once per name per TTL,
 * and it buys a new source port per query with no pool to manage or to be fingerprinted.
 */
import { createSocket, type Socket as UdpSocket } from 'node:dgram'
import { connect as tcpConnect, isIP, type Socket as TcpSocket } from 'node:net'
import { randomUint16 } from '../random.js'
import * as dnsPacket from 'dns-packet'
import { DnsError } from '../errors.js'
import type { Nameserver } from './resolv-conf.js'

export type QueryType = 'A' | 'AAAA'

/** A final answer from one server: NOERROR or NXDOMAIN (other rcodes are tried elsewhere). */
export interface DnsAnswer {
  readonly rcode: 'NOERROR' | 'NXDOMAIN'
  readonly answers: readonly dnsPacket.Answer[]
  readonly authorities: readonly dnsPacket.Answer[]
  readonly server: Nameserver
  readonly tcp: boolean
}

export interface Logger {
  debug: (obj: object, msg?: string) => void
  info: (obj: object, msg?: string) => void
  warn: (obj: object, msg?: string) => void
}

export interface TransportOptions {
  readonly nameservers: readonly Nameserver[]
  readonly timeoutMs: number
  readonly attempts: number
  readonly rotate: boolean
  readonly logger?: Logger | undefined
  /** 16-bit query ID source; crypto-random unless a test pins it */
  readonly randomId?: (() => number) | undefined
}

export interface TransportStats {
  /** messages sent (UDP and TCP) */
  queries: number
  /** answers accepted */
  answers: number
  /** datagrams or TCP messages ignored: wrong ID, question, sender, or undecodable */
  mismatched: number
  /** UDP answers with TC set, asked again over TCP */
  truncated: number
}

/** How one try at one server ended. */
type TryResult =
  | { readonly kind: 'message', readonly message: dnsPacket.DecodedPacket & { rcode?: string } }
  | { readonly kind: 'timeout' }
  | { readonly kind: 'error', readonly error: Error }

const MAX_TCP_MESSAGE = 65535
const MAX_IN_FLIGHT = 65536

function normalName (name: string): string {
  const lower = name.toLowerCase()
  return lower.endsWith('.') ? lower.slice(0, -1) : lower
}

/** The server address as the kernel reports a sender: IPv6 lower case, scope dropped. */
function senderKey (address: string): string {
  return address.split('%')[0]?.toLowerCase() ?? address
}

export class Transport {
  private readonly opts: TransportOptions
  private readonly randomId: () => number
  private readonly inFlight = new Set<number>()
  private readonly open = new Set<{ abort: () => void }>()
  private next = 0
  private closed = false
  readonly stats: TransportStats = { queries: 0, answers: 0, mismatched: 0, truncated: 0 }

  constructor (opts: TransportOptions) {
    this.opts = opts
    this.randomId = opts.randomId ?? randomUint16
  }

  /** IDs currently in flight (for tests and debugging). */
  get idsInFlight (): number { return this.inFlight.size }

  /**
   * Asks `name`/`type` until a server gives a final answer (NOERROR or NXDOMAIN).
   * Throws DnsError: 'ENONAMESERVER' (none configured), 'ESERVFAIL' (every answer was a failure
   * rcode), 'ETIMEOUT' (no server answered at all), 'ECANCELLED' (closed meanwhile).
   */
  async query (name: string, type: QueryType): Promise<DnsAnswer> {
    const servers = this.opts.nameservers
    if (servers.length === 0) throw new DnsError('ENONAMESERVER', name, 'no nameserver configured')
    // glibc `rotate`: each query starts at the next server; otherwise always at the first.
    const start = this.opts.rotate ? this.next++ % servers.length : 0
    const failures: string[] = []
    let rcodeFailure = false
    for (let attempt = 0; attempt < Math.max(1, this.opts.attempts); attempt++) {
      for (let i = 0; i < servers.length; i++) {
        const server = servers[(start + i) % servers.length] as Nameserver
        const where = `${server.address}:${server.port}`
        this.assertOpen(name)
        let result = await this.udpTry(server, name, type)
        let tcp = false
        if (result.kind === 'message' && result.message.flag_tc) {
          this.stats.truncated++
          this.opts.logger?.debug({ name, type, server: where }, 'dns answer truncated, asking over tcp')
          this.assertOpen(name)
          result = await this.tcpTry(server, name, type)
          tcp = true
        }
        this.assertOpen(name)
        if (result.kind === 'message') {
          const rcode = result.message.rcode ?? 'NOERROR'
          if (rcode === 'NOERROR' || rcode === 'NXDOMAIN') {
            return {
              rcode,
              answers: result.message.answers ?? [],
              authorities: result.message.authorities ?? [],
              server,
              tcp
            }
          }
          rcodeFailure = true
          failures.push(`${where} ${rcode}`)
        } else {
          failures.push(`${where}${tcp ? ' tcp' : ''} ${result.kind === 'timeout' ? 'timed out' : (result.error as NodeJS.ErrnoException).code ?? result.error.message}`)
        }
        this.opts.logger?.debug({ name, type, server: where, attempt, failure: failures[failures.length - 1] }, 'dns try failed')
      }
    }
    const summary = failures.join(', ')
    throw rcodeFailure
      ? new DnsError('ESERVFAIL', name, `no usable answer for ${type}: ${summary}`)
      : new DnsError('ETIMEOUT', name, `no answer for ${type}: ${summary}`)
  }

  /** Cancels every try in flight (their queries reject with ECANCELLED) and refuses new ones. */
  close (): void {
    this.closed = true
    for (const handle of [...this.open]) handle.abort()
  }

  private assertOpen (name: string): void {
    if (this.closed) throw new DnsError('ECANCELLED', name, 'resolver closed')
  }

  /** A random ID not in flight. Random draws first; a scan only when the space is nearly full. */
  private allocateId (): number {
    if (this.inFlight.size >= MAX_IN_FLIGHT) throw new Error('all 65536 DNS query IDs are in flight')
    for (let i = 0; i < 64; i++) {
      const id = this.randomId() & 0xffff
      if (!this.inFlight.has(id)) { this.inFlight.add(id); return id }
    }
    const from = this.randomId() & 0xffff
    for (let i = 0; i < MAX_IN_FLIGHT; i++) {
      const id = (from + i) & 0xffff
      if (!this.inFlight.has(id)) { this.inFlight.add(id); return id }
    }
    /* c8 ignore next */
    throw new Error('unreachable: no free DNS query ID')
  }

  private encode (id: number, name: string, type: QueryType): Buffer {
    return dnsPacket.encode({
      type: 'query',
      id,
      flags: dnsPacket.RECURSION_DESIRED,
      questions: [{ type, class: 'IN', name }]
    })
  }

  /** Does this decoded message answer exactly our question? */
  private matches (message: dnsPacket.DecodedPacket, id: number, name: string, type: QueryType): boolean {
    if (message.id !== id || message.type !== 'response') return false
    const questions = message.questions ?? []
    if (questions.length !== 1) return false
    const q = questions[0] as dnsPacket.Question
    return normalName(q.name) === normalName(name) && q.type === type && (q.class ?? 'IN') === 'IN'
  }

  private decode (buf: Buffer): (dnsPacket.DecodedPacket & { rcode?: string }) | null {
    try {
      return dnsPacket.decode(buf) as dnsPacket.DecodedPacket & { rcode?: string }
    } catch {
      return null
    }
  }

  private udpTry (server: Nameserver, name: string, type: QueryType): Promise<TryResult> {
    const id = this.allocateId()
    const query = this.encode(id, name, type)
    const family = isIP(server.address.split('%')[0] ?? '') === 6 ? 'udp6' : 'udp4'
    return new Promise<TryResult>(resolve => {
      let socket: UdpSocket | null = null
      let timer: NodeJS.Timeout | null = null
      const handle = { abort: () => finish({ kind: 'error', error: new Error('cancelled') }) }
      const finish = (result: TryResult): void => {
        if (!this.open.delete(handle)) return
        if (timer !== null) clearTimeout(timer)
        socket?.close()
        this.inFlight.delete(id)
        resolve(result)
      }
      this.open.add(handle)
      socket = createSocket({ type: family })
      socket.on('error', error => finish({ kind: 'error', error }))
      socket.on('message', (buf, rinfo) => {
        const message = this.decode(buf)
        if (senderKey(rinfo.address) !== senderKey(server.address) || rinfo.port !== server.port ||
            message === null || !this.matches(message, id, name, type)) {
          this.stats.mismatched++
          this.opts.logger?.debug({ name, type, from: `${rinfo.address}:${rinfo.port}` }, 'dns answer ignored: does not match the query')
          return
        }
        this.stats.answers++
        finish({ kind: 'message', message })
      })
      timer = setTimeout(() => finish({ kind: 'timeout' }), this.opts.timeoutMs)
      timer.unref()
      // Binding to port 0 lets the kernel pick a random ephemeral port (Linux randomises it);
      // connect() makes the kernel drop datagrams from anyone but the server.
      socket.connect(server.port, server.address, () => {
        if (!this.open.has(handle)) return
        this.stats.queries++
        socket?.send(query, error => { if (error !== null && error !== undefined) finish({ kind: 'error', error }) })
      })
    })
  }

  private tcpTry (server: Nameserver, name: string, type: QueryType): Promise<TryResult> {
    const id = this.allocateId()
    const query = this.encode(id, name, type)
    return new Promise<TryResult>(resolve => {
      let received = Buffer.alloc(0)
      let timer: NodeJS.Timeout | null = null
      const handle = { abort: () => finish({ kind: 'error', error: new Error('cancelled') }) }
      const finish = (result: TryResult): void => {
        if (!this.open.delete(handle)) return
        if (timer !== null) clearTimeout(timer)
        socket.destroy()
        this.inFlight.delete(id)
        resolve(result)
      }
      this.open.add(handle)
      const socket: TcpSocket = tcpConnect({ host: server.address, port: server.port })
      socket.on('error', error => finish({ kind: 'error', error }))
      socket.on('close', () => finish({ kind: 'error', error: new Error('connection closed before an answer') }))
      socket.on('connect', () => {
        this.stats.queries++
        const framed = Buffer.alloc(2 + query.length)
        framed.writeUInt16BE(query.length, 0)
        query.copy(framed, 2)
        socket.write(framed)
      })
      socket.on('data', chunk => {
        received = Buffer.concat([received, chunk])
        // A server may send several messages on one connection; read each, keep the matching one.
        while (received.length >= 2) {
          const length = received.readUInt16BE(0)
          if (received.length < 2 + length) {
            if (received.length > 2 + MAX_TCP_MESSAGE) finish({ kind: 'error', error: new Error('oversized tcp message') })
            return
          }
          const message = this.decode(received.subarray(2, 2 + length))
          received = received.subarray(2 + length)
          if (message !== null && this.matches(message, id, name, type)) {
            this.stats.answers++
            finish({ kind: 'message', message })
            return
          }
          this.stats.mismatched++
          this.opts.logger?.debug({ name, type, server: `${server.address}:${server.port}` }, 'dns tcp answer ignored: does not match the query')
        }
      })
      timer = setTimeout(() => finish({ kind: 'timeout' }), this.opts.timeoutMs)
      timer.unref()
    })
  }
}
