/**
 * A small programmable DNS server on loopback (UDP, and TCP on the same port), written with
 * dns-packet, for the transport and resolver tests: it records every query and lets each test
 * decide, per query, what to send back — including spoofed or truncated answers, or nothing.
 * Not a test file itself (tap reports it as "no tests found").
 */
import { createSocket, type RemoteInfo, type Socket } from 'node:dgram'
import { createServer, type Server, type Socket as TcpSocket } from 'node:net'
import * as dnsPacket from 'dns-packet'

export type Query = dnsPacket.DecodedPacket & { rcode?: string }

export interface Reply {
  /** send a packet (or raw bytes) to the asker, from the server's own socket */
  send: (packet: dnsPacket.Packet | Buffer) => void
  /** send from another socket (another source port): a spoof the client must ignore */
  sendFromOtherPort: (packet: dnsPacket.Packet) => void
  readonly tcp: boolean
}

export type Handler = (query: Query, reply: Reply) => void

export interface Fixture {
  readonly address: string
  readonly port: number
  readonly queries: Query[]
  handler: Handler
  close: () => Promise<void>
}

/** A response to `query` with the given answers and rcode (dns-packet encodes rcode in flags). */
export function response (query: Query, answers: dnsPacket.Answer[], options: { rcode?: number, tc?: boolean, authorities?: dnsPacket.Answer[] } = {}): dnsPacket.Packet {
  return {
    type: 'response',
    id: query.id ?? 0,
    flags: dnsPacket.RECURSION_DESIRED | dnsPacket.RECURSION_AVAILABLE | (options.tc === true ? dnsPacket.TRUNCATED_RESPONSE : 0) | (options.rcode ?? 0),
    questions: query.questions ?? [],
    answers,
    authorities: options.authorities ?? []
  }
}

export const RCODE = { NOERROR: 0, SERVFAIL: 2, NXDOMAIN: 3, REFUSED: 5 } as const

export function question (query: Query): { name: string, type: string } {
  const q = (query.questions ?? [])[0]
  return { name: q?.name.toLowerCase() ?? '', type: q?.type ?? '' }
}

/** Starts a fixture on `address`, UDP and TCP on one port (retries a few ports if TCP's is taken). */
export async function startFixture (handler: Handler, address = '127.0.0.1'): Promise<Fixture> {
  for (let tries = 0; tries < 10; tries++) {
    const udp = createSocket(address.includes(':') ? 'udp6' : 'udp4')
    await new Promise<void>((resolve, reject) => { udp.once('error', reject); udp.bind(0, address, () => resolve()) })
    const port = udp.address().port
    const tcp = createServer()
    const ok = await new Promise<boolean>(resolve => {
      tcp.once('error', () => resolve(false))
      tcp.listen(port, address, () => resolve(true))
    })
    if (!ok) { udp.close(); continue }
    return wire(udp, tcp, address, port, handler)
  }
  throw new Error('no port free for both UDP and TCP after 10 tries')
}

function wire (udp: Socket, tcp: Server, address: string, port: number, handler: Handler): Fixture {
  const others: Socket[] = []
  const conns = new Set<TcpSocket>()
  const fixture: Fixture = {
    address,
    port,
    queries: [],
    handler,
    close: async () => {
      for (const c of conns) c.destroy()
      for (const o of others) o.close()
      await Promise.all([
        new Promise<void>(resolve => udp.close(() => resolve())),
        new Promise<void>(resolve => tcp.close(() => resolve()))
      ])
    }
  }
  udp.on('message', (buf: Buffer, rinfo: RemoteInfo) => {
    let query: Query
    try { query = dnsPacket.decode(buf) as Query } catch { return }
    fixture.queries.push(query)
    fixture.handler(query, {
      tcp: false,
      send: packet => udp.send(Buffer.isBuffer(packet) ? packet : dnsPacket.encode(packet), rinfo.port, rinfo.address),
      sendFromOtherPort: packet => {
        const other = createSocket(address.includes(':') ? 'udp6' : 'udp4')
        others.push(other)
        other.bind(0, address, () => other.send(dnsPacket.encode(packet), rinfo.port, rinfo.address))
      }
    })
  })
  tcp.on('connection', conn => {
    conns.add(conn)
    conn.on('close', () => conns.delete(conn))
    conn.on('error', () => {})
    let received = Buffer.alloc(0)
    conn.on('data', chunk => {
      received = Buffer.concat([received, chunk])
      while (received.length >= 2 && received.length >= 2 + received.readUInt16BE(0)) {
        const length = received.readUInt16BE(0)
        const body = received.subarray(2, 2 + length)
        received = received.subarray(2 + length)
        let query: Query
        try { query = dnsPacket.decode(body) as Query } catch { continue }
        fixture.queries.push(query)
        fixture.handler(query, {
          tcp: true,
          send: packet => conn.write(Buffer.isBuffer(packet) ? packet : dnsPacket.streamEncode(packet)),
          sendFromOtherPort: () => { throw new Error('no spoofing over tcp') }
        })
      }
    })
  })
  return fixture
}

/** Polls `condition` every 10 ms until it holds or `ms` passes; resolves to whether it held. */
export async function waitFor (condition: () => boolean, ms = 5000): Promise<boolean> {
  const deadline = Date.now() + ms
  while (Date.now() < deadline) {
    if (condition()) return true
    await new Promise(resolve => setTimeout(resolve, 10))
  }
  return condition()
}
