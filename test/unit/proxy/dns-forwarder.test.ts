import t from 'tap'
import net from 'node:net'
import type { AddressInfo, Server, Socket } from 'node:net'
import { once } from 'node:events'
import { spawn } from 'node:child_process'
import v8 from 'node:v8'
import vm from 'node:vm'
import { Writable } from 'node:stream'
import { createHash, randomBytes } from 'node:crypto'
import { pino } from 'pino'
import type { DnsForward, IpAddress } from '../../../src/config/types.js'
import { ApplyError } from '../../../src/errors.js'
import { createMetrics } from '../../../src/observe/metrics.js'
import type { Metrics } from '../../../src/observe/metrics.js'
import { attemptOrder, createDnsForwarder, createDnsProxy } from '../../../src/proxy/dns-forwarder.js'
import type { DnsForwarder, DnsForwarderOptions, WatchingResolver } from '../../../src/proxy/dns-forwarder.js'
import { FakeResolver } from '../../helpers/fake-resolver.js'

/** what the helpers need from a test: cleanup registration */
type Test = Pick<typeof t, 'teardown'>

// Loopback stand-ins: the router listens on .1, EGRESS_SOURCE is .2, destinations are .3/.4/.5.
const LISTEN = '127.0.0.1'
const SOURCE: IpAddress = { address: '127.0.0.2', family: 4 }
const ip = (address: string): IpAddress => ({ address, family: address.includes(':') ? 6 : 4 })
const NAME = 'db.example.test'

v8.setFlagsFromString('--expose-gc')
const gc = vm.runInNewContext('gc') as () => void

// ---- helpers ------------------------------------------------------------------------------------

async function until (cond: () => boolean, what: string, deadlineMs = 30_000): Promise<void> {
  const end = Date.now() + deadlineMs
  while (!cond()) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`)
    await new Promise(resolve => setTimeout(resolve, 5))
  }
}

function captureLog (): { logger: pino.Logger, lines: Array<Record<string, unknown>> } {
  const lines: Array<Record<string, unknown>> = []
  const stream = new Writable({
    write (chunk: Buffer, _enc, cb) {
      for (const line of chunk.toString().split('\n')) if (line !== '') lines.push(JSON.parse(line) as Record<string, unknown>)
      cb()
    }
  })
  return { logger: pino({ level: 'debug' }, stream), lines }
}

function nameForward (port: number, targetPort: number, name = NAME, line = 1): DnsForward {
  return { line, port, target: { kind: 'name', name }, targetPort }
}
function ipForward (port: number, address: string, targetPort: number, line = 1): DnsForward {
  return { line, port, target: { kind: 'ip', address: ip(address) }, targetPort }
}

/** What a destination server saw on one connection. */
interface Seen {
  sock: Socket
  local: string
  remote: string
  received: number
  hash: ReturnType<typeof createHash>
  /** 'clean' after FIN, an error code after a reset, null while open */
  end: string | null
}

interface Dest { server: Server, port: number, seen: Seen[] }

/**
 * A destination: greets each connection with "<its address> <client address>\n", hashes what it
 * receives and, after the client's FIN, answers "digest <sha256>\n" and closes (half-close in
 * action). With endFirst it closes its side right after the greeting and just keeps reading.
 */
async function destination (t: Test, host: string, port = 0, opts: { endFirst?: boolean } = {}): Promise<Dest> {
  const seen: Seen[] = []
  const server = net.createServer({ allowHalfOpen: true }, sock => {
    const s: Seen = { sock, local: sock.localAddress ?? '', remote: sock.remoteAddress ?? '', received: 0, hash: createHash('sha256'), end: null }
    seen.push(s)
    sock.on('error', (err: NodeJS.ErrnoException) => { s.end ??= err.code ?? err.message })
    sock.on('data', (c: Buffer) => { s.received += c.length; s.hash.update(c) })
    sock.on('end', () => {
      s.end ??= 'clean'
      if (!opts.endFirst) sock.end(`digest ${s.hash.digest('hex')}\n`)
    })
    if (opts.endFirst) sock.end(`${s.local} ${s.remote}\n`)
    else sock.write(`${s.local} ${s.remote}\n`)
  })
  server.listen(port, host)
  await Promise.race([once(server, 'listening'), once(server, 'error').then(([e]) => { throw e })])
  t.teardown(() => { for (const s of seen) s.sock.destroy(); server.close() })
  return { server, port: (server.address() as AddressInfo).port, seen }
}

/** Destinations on several addresses sharing one port (a name's A records all serve targetPort). */
async function destinationsOnOnePort (t: Test, hosts: readonly string[]): Promise<Dest[]> {
  for (let tries = 0; tries < 20; tries++) {
    const first = await destination(t, hosts[0] as string)
    const rest: Dest[] = []
    try {
      for (const h of hosts.slice(1)) rest.push(await destination(t, h, first.port))
      return [first, ...rest]
    } catch {
      first.server.close()
      for (const r of rest) r.server.close()
    }
  }
  throw new Error('no port free on every destination address')
}

interface Reply { greeting: string, digest: string, raw: string }

/** Connects to the forwarder, sends payload, half-closes, reads the whole answer. */
async function exchange (port: number, payload: Buffer | string): Promise<Reply> {
  const sock = net.connect({ host: LISTEN, port, allowHalfOpen: true })
  const chunks: Buffer[] = []
  sock.on('data', (c: Buffer) => chunks.push(c))
  const ended = new Promise<void>((resolve, reject) => { sock.once('end', resolve); sock.once('error', reject) })
  sock.end(payload)
  await ended
  sock.destroy()
  const raw = Buffer.concat(chunks).toString()
  const [greeting = '', digestLine = ''] = raw.split('\n')
  return { greeting, digest: digestLine.replace(/^digest /, ''), raw }
}

const sha = (b: Buffer | string): string => createHash('sha256').update(b).digest('hex')

/** How a client socket ends: 'clean' (FIN), or the error code. Consumes data. */
function clientEnd (sock: Socket): Promise<string> {
  return new Promise(resolve => {
    sock.on('data', () => {})
    sock.once('error', (err: NodeJS.ErrnoException) => { resolve(err.code ?? err.message) })
    sock.once('end', () => { resolve('clean') })
  })
}

interface Started { fw: DnsForwarder, port: number, metrics: Metrics, lines: Array<Record<string, unknown>> }

async function startForwarder (t: Test, forward: DnsForward, resolver?: WatchingResolver, options?: DnsForwarderOptions): Promise<Started> {
  const metrics = createMetrics({ defaultMetrics: false })
  const { logger, lines } = captureLog()
  const fw = createDnsForwarder({ forward, listenHost: LISTEN, sourceAddress: SOURCE, resolver, logger, metrics, options })
  const bound = await fw.listen()
  t.teardown(() => fw.close(0))
  return { fw, port: bound.port, metrics, lines }
}

async function metricValue (m: Metrics, name: 'connectionOutcomes' | 'bytesTotal' | 'connectionsTotal' | 'connectionsActive', labels: Record<string, string>): Promise<number> {
  const got = await m[name].get()
  const hit = got.values.find(v => Object.entries(labels).every(([k, val]) => (v.labels as Record<string, unknown>)[k] === val))
  return hit?.value ?? 0
}

// ---- pure: the attempt order --------------------------------------------------------------------

t.test('attempt order: round robin from start, recently failed addresses last', async t => {
  const list = ['a', 'b', 'c'].map(a => ({ address: a, family: 4 as const }))
  t.same(attemptOrder(list, 1, () => false).map(a => a.address), ['b', 'c', 'a'])
  t.same(attemptOrder(list, 1, a => a.address === 'b').map(a => a.address), ['c', 'a', 'b'])
  t.same(attemptOrder(list, 0, () => true).map(a => a.address), ['a', 'b', 'c'], 'all failed: still all tried')
  t.same(attemptOrder([], 0, () => false), [])
})

// ---- forwarding ---------------------------------------------------------------------------------

t.test('IP forward with a target port: the destination sees EGRESS_SOURCE, bytes and outcome are recorded', async t => {
  const dest = await destination(t, '127.0.0.3')
  const { fw, port, metrics, lines } = await startForwarder(t, ipForward(0, '127.0.0.3', dest.port))
  t.equal(fw.ready(), true, 'an IP target is ready at once')
  const reply = await exchange(port, 'hello')
  t.equal(reply.greeting, '127.0.0.3 127.0.0.2', 'destination sees the source address')
  t.equal(reply.digest, sha('hello'))
  await until(() => fw.stats().active === 0, 'the connection to finish')
  const labels = { mode: 'dns-proxy', listener: '0' }
  t.equal(await metricValue(metrics, 'connectionsTotal', labels), 1)
  t.equal(await metricValue(metrics, 'connectionsActive', labels), 0)
  t.equal(await metricValue(metrics, 'connectionOutcomes', { ...labels, outcome: 'ok' }), 1)
  t.equal(await metricValue(metrics, 'bytesTotal', { ...labels, direction: 'upstream' }), 5)
  t.equal(await metricValue(metrics, 'bytesTotal', { ...labels, direction: 'downstream' }), reply.raw.length)
  const entry = lines.find(l => l.msg === 'connection closed')
  t.match(entry, {
    level: 20,
    listener: '0',
    client: /^127\.0\.0\.1:\d+$/,
    destination: `127.0.0.3:${dest.port}`,
    up: 5,
    down: reply.raw.length,
    outcome: 'ok',
    durationMs: Number
  }, 'one debug line per connection')
})

t.test('IP forward without a target port goes to the same port', async t => {
  // The forwarder must listen on the destination's port number (on another address).
  for (let tries = 0; tries < 20; tries++) {
    const dest = await destination(t, '127.0.0.3')
    let started: Started
    try {
      started = await startForwarder(t, ipForward(dest.port, '127.0.0.3', dest.port))
    } catch (err) {
      t.type(err, ApplyError, 'port taken on the listen address: try another')
      continue
    }
    t.equal(started.port, dest.port)
    const reply = await exchange(started.port, 'same port')
    t.equal(reply.greeting, '127.0.0.3 127.0.0.2')
    t.equal(reply.digest, sha('same port'))
    return
  }
  t.fail('no free port pair found')
})

t.test('name forward with a target port', async t => {
  const dest = await destination(t, '127.0.0.4')
  const resolver = new FakeResolver()
  resolver.set(NAME, ['127.0.0.4'])
  const { fw, port } = await startForwarder(t, nameForward(0, dest.port), resolver)
  t.equal(fw.ready(), true)
  t.same(fw.stats().addresses, ['127.0.0.4'])
  const reply = await exchange(port, 'by name')
  t.equal(reply.greeting, '127.0.0.4 127.0.0.2')
  t.equal(reply.digest, sha('by name'))
  t.equal(resolver.resolveCalls, 0, 'a cached answer needs no lookup')
})

t.test('name forward without a target port', async t => {
  const resolver = new FakeResolver()
  resolver.set(NAME, ['127.0.0.5'])
  for (let tries = 0; tries < 20; tries++) {
    const dest = await destination(t, '127.0.0.5')
    let started: Started
    try {
      started = await startForwarder(t, nameForward(dest.port, dest.port), resolver)
    } catch (err) {
      t.type(err, ApplyError)
      continue
    }
    const reply = await exchange(started.port, 'by name, same port')
    t.equal(reply.greeting, '127.0.0.5 127.0.0.2')
    t.equal(reply.digest, sha('by name, same port'))
    return
  }
  t.fail('no free port pair found')
})

t.test('new connections take the addresses round robin', async t => {
  const dests = await destinationsOnOnePort(t, ['127.0.0.3', '127.0.0.4', '127.0.0.5'])
  const resolver = new FakeResolver()
  resolver.set(NAME, ['127.0.0.3', '127.0.0.4', '127.0.0.5'])
  const { port } = await startForwarder(t, nameForward(0, dests[0]!.port), resolver)
  const order: string[] = []
  for (let i = 0; i < 6; i++) order.push((await exchange(port, `n${i}`)).greeting.split(' ')[0] as string)
  t.same(order, ['127.0.0.3', '127.0.0.4', '127.0.0.5', '127.0.0.3', '127.0.0.4', '127.0.0.5'])
})

t.test('with one address down every connection still succeeds', async t => {
  const dests = await destinationsOnOnePort(t, ['127.0.0.3', '127.0.0.5'])
  // Nothing listens on 127.0.0.4 at that port: connecting there is refused.
  const resolver = new FakeResolver()
  resolver.set(NAME, ['127.0.0.3', '127.0.0.4', '127.0.0.5'])
  const { fw, port, metrics } = await startForwarder(t, nameForward(0, dests[0]!.port), resolver, { failurePenaltyMs: 3_600_000 })
  const served: string[] = []
  for (let i = 0; i < 9; i++) {
    const reply = await exchange(port, `try ${i}`)
    t.equal(reply.digest, sha(`try ${i}`), `connection ${i} intact`)
    served.push(reply.greeting.split(' ')[0] as string)
  }
  t.notOk(served.includes('127.0.0.4'))
  t.ok(served.includes('127.0.0.3') && served.includes('127.0.0.5'), 'both live addresses used')
  t.equal(fw.stats().connectFailures, 1, 'the refused address is tried last after it failed once')
  await until(() => fw.stats().active === 0, 'connections to finish')
  t.equal(await metricValue(metrics, 'connectionOutcomes', { outcome: 'ok' }), 9)
})

t.test('an address that does not answer: the attempt times out and the next address serves', async t => {
  // A listener that never accepts, with a backlog of 0: once one connection waits in its queue,
  // the kernel drops further SYNs and connecting hangs, as with a black-holed address.
  const script = 'import socket,sys\ns=socket.socket()\ns.bind(("127.0.0.3",0))\ns.listen(0)\nprint(s.getsockname()[1],flush=True)\nsys.stdin.read()\n'
  let port = 0
  let good: Dest | null = null
  for (let tries = 0; tries < 10 && good === null; tries++) {
    const child = spawn('python3', ['-c', script], { stdio: ['pipe', 'pipe', 'inherit'] })
    t.teardown(() => { child.kill() })
    const [first] = await Promise.race([once(child.stdout, 'data') as Promise<[Buffer]>, once(child, 'error').then(([e]) => { throw e })])
    port = Number(first.toString().trim())
    try {
      good = await destination(t, '127.0.0.4', port)
    } catch {
      child.kill() // port taken on 127.0.0.4: another pair
      continue
    }
    const filler = net.connect({ host: '127.0.0.3', port })
    t.teardown(() => { filler.destroy() })
    await once(filler, 'connect')
  }
  if (good === null) throw new Error('no port free on both addresses')
  const resolver = new FakeResolver()
  resolver.set(NAME, ['127.0.0.3', '127.0.0.4'])
  const { fw, port: listen, lines } = await startForwarder(t, nameForward(0, port), resolver, { connectTimeoutMs: 200 })
  const reply = await exchange(listen, 'patience')
  t.equal(reply.greeting, '127.0.0.4 127.0.0.2')
  t.equal(reply.digest, sha('patience'))
  t.equal(fw.stats().connectFailures, 1)
  t.ok(lines.some(l => l.msg === 'connect timeout' && l.destination === `127.0.0.3:${port}`), 'the timed out attempt is logged')
  t.equal(good.seen.length, 1)
})

t.test('every address down: the client is reset and the outcome is refused', async t => {
  const probe = await destination(t, '127.0.0.3')
  const closedPort = probe.port
  await new Promise<void>(resolve => probe.server.close(() => { resolve() }))
  const resolver = new FakeResolver()
  resolver.set(NAME, ['127.0.0.3', '127.0.0.4'])
  const { fw, port, metrics } = await startForwarder(t, nameForward(0, closedPort), resolver)
  const sock = net.connect({ host: LISTEN, port })
  t.teardown(() => { sock.destroy() })
  t.equal(await clientEnd(sock), 'ECONNRESET')
  await until(() => fw.stats().active === 0, 'the connection to be finished')
  t.equal(fw.stats().connectFailures, 2, 'both addresses tried')
  t.equal(await metricValue(metrics, 'connectionOutcomes', { outcome: 'refused' }), 1)
})

t.test('a changed answer: new connections go to the new address, a transfer already running completes intact', async t => {
  const [oldDest, newDest] = await destinationsOnOnePort(t, ['127.0.0.3', '127.0.0.4'])
  const resolver = new FakeResolver()
  resolver.set(NAME, ['127.0.0.3'])
  const { fw, port } = await startForwarder(t, nameForward(0, oldDest!.port), resolver)

  const data = randomBytes(16 * 1024 * 1024)
  const half = data.length / 2
  const long = net.connect({ host: LISTEN, port, allowHalfOpen: true })
  t.teardown(() => { long.destroy() })
  const chunks: Buffer[] = []
  long.on('data', (c: Buffer) => chunks.push(c))
  const longEnded = once(long, 'end')
  long.write(data.subarray(0, half))
  await until(() => oldDest!.seen[0] !== undefined && oldDest!.seen[0].received >= half, 'the first half at the old address')

  resolver.set(NAME, ['127.0.0.4'])
  t.same(fw.stats().addresses, ['127.0.0.4'])
  const fresh = await exchange(port, 'after the change')
  t.equal(fresh.greeting, '127.0.0.4 127.0.0.2', 'a new connection goes to the new address')

  long.end(data.subarray(half))
  await longEnded
  const [greeting, digest] = Buffer.concat(chunks).toString().split('\n')
  t.equal(greeting, '127.0.0.3 127.0.0.2', 'the running transfer kept its destination')
  t.equal(digest, `digest ${sha(data)}`, 'and arrived intact')
  t.equal(newDest!.seen.length, 1)
})

t.test('half-close works both ways through the forwarder', async t => {
  t.test('client closes first, the destination answers afterwards', async t => {
    const dest = await destination(t, '127.0.0.3')
    const { port } = await startForwarder(t, ipForward(0, '127.0.0.3', dest.port))
    // exchange() half-closes and then reads the digest the destination sends after the FIN.
    const reply = await exchange(port, 'question')
    t.equal(reply.digest, sha('question'))
  })
  t.test('destination closes first, the client keeps sending', async t => {
    const dest = await destination(t, '127.0.0.3', 0, { endFirst: true })
    const { port } = await startForwarder(t, ipForward(0, '127.0.0.3', dest.port))
    const sock = net.connect({ host: LISTEN, port, allowHalfOpen: true })
    t.teardown(() => { sock.destroy() })
    const got: Buffer[] = []
    sock.on('data', (c: Buffer) => got.push(c))
    await once(sock, 'end')
    t.equal(Buffer.concat(got).toString(), '127.0.0.3 127.0.0.2\n')
    t.equal(sock.writable, true, 'the client can still send')
    sock.write('late ')
    sock.end('words')
    await until(() => dest.seen[0]?.end !== null, 'the destination to see the FIN')
    t.equal(dest.seen[0]!.end, 'clean')
    t.equal(dest.seen[0]!.hash.digest('hex'), sha('late words'))
  })
})

t.test('a reset on one side resets the other', async t => {
  t.test('client resets', async t => {
    const dest = await destination(t, '127.0.0.3')
    const { fw, port, metrics } = await startForwarder(t, ipForward(0, '127.0.0.3', dest.port))
    const sock = net.connect({ host: LISTEN, port })
    t.teardown(() => { sock.destroy() })
    await once(sock, 'data')
    sock.resetAndDestroy()
    await until(() => dest.seen[0]?.end !== null, 'the destination to see the end')
    t.equal(dest.seen[0]!.end, 'ECONNRESET')
    await until(() => fw.stats().active === 0, 'the connection to finish')
    t.equal(await metricValue(metrics, 'connectionOutcomes', { outcome: 'error' }), 1)
  })
  t.test('destination resets', async t => {
    const dest = await destination(t, '127.0.0.3')
    const { port } = await startForwarder(t, ipForward(0, '127.0.0.3', dest.port))
    const sock = net.connect({ host: LISTEN, port })
    t.teardown(() => { sock.destroy() })
    const ended = clientEnd(sock)
    await until(() => dest.seen.length === 1 && sock.bytesRead > 0, 'the connection')
    dest.seen[0]!.sock.resetAndDestroy()
    t.equal(await ended, 'ECONNRESET')
  })
})

t.test('256 MiB each way arrive intact and memory stays flat', async t => {
  const MiB = 1024 * 1024
  const chunks = 256
  const base = randomBytes(MiB)
  interface Sender { sent: number, waiting: boolean, done: boolean, hash: Promise<string> }
  /**
   * Sends chunk 0..255 of a stream: a random MiB stamped with the stream id and index, so
   * reordering shows. Chunk buffers come from a small ring, reused once written, so the test's own
   * garbage does not blur the memory measurement.
   */
  const rings = [1, 2].map(() => Array.from({ length: 8 }, () => Buffer.allocUnsafe(MiB)))
  const send = (sock: Socket, stream: number): Sender => {
    const s: Sender = { sent: 0, waiting: false, done: false, hash: Promise.resolve('') }
    const free = rings[stream - 1] as Buffer[]
    let returned: (() => void) | null = null
    s.hash = (async () => {
      const h = createHash('sha256')
      for (let i = 0; i < chunks; i++) {
        while (free.length === 0) await new Promise<void>(resolve => { returned = resolve })
        const c = free.pop() as Buffer
        base.copy(c)
        c.writeUInt32BE(stream, 0)
        c.writeUInt32BE(i, 4)
        h.update(c)
        s.sent += c.length
        const ok = sock.write(c, () => { free.push(c); returned?.(); returned = null })
        if (!ok) { s.waiting = true; await once(sock, 'drain'); s.waiting = false }
      }
      sock.end()
      s.done = true
      return h.digest('hex')
    })()
    return s
  }
  let peak = 0
  let samples = 0
  // Every chunk read anywhere (forwarder and test endpoints alike) becomes garbage, and V8 lets
  // such external memory grow by tens of MiB before it collects. A full GC every 16 MiB or so received
  // keeps that allowance out of the number, so what remains is what the relay actually holds.
  const sample = (): void => {
    samples += 1
    if ((samples & 255) === 0) gc()
    if ((samples & 7) === 0) peak = Math.max(peak, process.memoryUsage.rss())
  }
  /** Hashes what arrives; starts paused, so the senders first run into backpressure. */
  const receive = (sock: Socket): Promise<{ hash: string, bytes: number }> => new Promise((resolve, reject) => {
    const h = createHash('sha256')
    let bytes = 0
    sock.pause()
    sock.on('data', (c: Buffer) => { h.update(c); bytes += c.length; sample() })
    sock.once('end', () => { resolve({ hash: h.digest('hex'), bytes }) })
    sock.once('error', reject)
  })

  let serverSock: Socket | null = null
  const server = net.createServer({ allowHalfOpen: true }, sock => { serverSock = sock })
  server.listen(0, '127.0.0.3')
  await once(server, 'listening')
  t.teardown(() => { server.close() })
  const { fw, port } = await startForwarder(t, ipForward(0, '127.0.0.3', (server.address() as AddressInfo).port))

  gc()
  const before = process.memoryUsage.rss()
  peak = before
  const client = net.connect({ host: LISTEN, port, allowHalfOpen: true })
  t.teardown(() => { client.destroy() })
  await once(client, 'connect')
  await until(() => serverSock !== null, 'the destination to accept')
  const srv = serverSock as unknown as Socket
  const clientGot = receive(client)
  const serverGot = receive(srv)
  const up = send(client, 1)
  const down = send(srv, 2)

  // Nobody reads yet. With backpressure end to end both senders stall after a few MiB (kernel
  // buffers plus a socket high-water mark per hop); without it the forwarder would soak up all.
  let last = -1
  let still = 0
  await until(() => {
    if (up.done && down.done) return true
    const progress = up.sent + down.sent
    still = up.waiting && down.waiting && progress === last ? still + 1 : 0
    last = progress
    return still >= 20
  }, 'both senders to stall or finish')
  t.comment(`stalled with ${(up.sent / MiB).toFixed(1)} MiB up and ${(down.sent / MiB).toFixed(1)} MiB down in flight`)
  t.ok(up.sent < 64 * MiB && down.sent < 64 * MiB, 'a reader that does not read stalls its sender through the forwarder')
  peak = Math.max(peak, process.memoryUsage.rss())
  client.resume()
  srv.resume()

  const [clientSent, serverSent, upGot, downGot] = await Promise.all([up.hash, down.hash, serverGot, clientGot])
  const after = process.memoryUsage.rss()
  t.equal(upGot.bytes, chunks * MiB, 'all bytes up')
  t.equal(downGot.bytes, chunks * MiB, 'all bytes down')
  t.equal(upGot.hash, clientSent, 'upstream intact (sha256)')
  t.equal(downGot.hash, serverSent, 'downstream intact (sha256)')
  const growth = peak - before
  t.comment(`RSS before ${(before / MiB).toFixed(1)} MiB, peak ${(peak / MiB).toFixed(1)} MiB, after ${(after / MiB).toFixed(1)} MiB, peak growth ${(growth / MiB).toFixed(1)} MiB over ${2 * chunks} MiB relayed`)
  t.ok(growth < 64 * MiB, `RSS growth ${(growth / MiB).toFixed(1)} MiB stays under 64 MiB`)
  await until(() => fw.stats().active === 0, 'the relay to finish')
})

t.test('a name without an answer: listener up, not ready; held connections go on when the answer comes', async t => {
  const dest = await destination(t, '127.0.0.3')
  const resolver = new FakeResolver()
  const { fw, port } = await startForwarder(t, nameForward(0, dest.port), resolver, { holdMs: 60_000 })
  t.equal(fw.ready(), false)
  t.equal(resolver.watching(NAME), 1, 'the forwarder watches the name')
  await until(() => resolver.resolveCalls === 1, 'one lookup to be asked for')
  const pending = exchange(port, 'early')
  await until(() => fw.stats().held === 1, 'the connection to be held')
  resolver.set(NAME, ['127.0.0.3'])
  t.equal(fw.ready(), true)
  const reply = await pending
  t.equal(reply.greeting, '127.0.0.3 127.0.0.2')
  t.equal(reply.digest, sha('early'))
})

t.test('a name without an answer: a held connection is reset when the hold ends', async t => {
  const resolver = new FakeResolver()
  const { fw, port, metrics } = await startForwarder(t, nameForward(0, 9), resolver, { holdMs: 50 })
  const sock = net.connect({ host: LISTEN, port })
  t.teardown(() => { sock.destroy() })
  t.equal(await clientEnd(sock), 'ECONNRESET')
  await until(() => fw.stats().active === 0, 'the connection to be finished')
  t.equal(await metricValue(metrics, 'connectionOutcomes', { outcome: 'unresolved' }), 1)
})

t.test('a name gone later: ready turns false; stale answers still serve', async t => {
  const dest = await destination(t, '127.0.0.3')
  const resolver = new FakeResolver()
  resolver.set(NAME, ['127.0.0.3'])
  const { fw, port, lines } = await startForwarder(t, nameForward(0, dest.port), resolver)
  resolver.set(NAME, ['127.0.0.3'], true)
  t.equal(fw.ready(), true, 'a stale answer is still an answer')
  t.equal(fw.stats().stale, true)
  t.ok(lines.some(l => l.level === 40 && String(l.msg).includes('last good DNS answer')))
  t.equal((await exchange(port, 'stale')).digest, sha('stale'))
  resolver.set(NAME, [])
  t.equal(fw.ready(), false)
})

t.test('addresses of the other family than the source are not used', async t => {
  const resolver = new FakeResolver()
  resolver.set(NAME, ['::1'])
  const { fw } = await startForwarder(t, nameForward(0, 9), resolver)
  t.equal(fw.ready(), false)
  t.same(fw.stats().addresses, [])
  resolver.set(NAME, ['::1', '127.0.0.3'])
  t.same(fw.stats().addresses, ['127.0.0.3'])
})

t.test('a name target without a resolver is a programming error', async t => {
  t.throws(() => createDnsForwarder({
    forward: nameForward(0, 1),
    listenHost: LISTEN,
    sourceAddress: SOURCE,
    logger: pino({ level: 'silent' }),
    metrics: createMetrics({ defaultMetrics: false })
  }), TypeError)
})

t.test('a port in use fails listen() with an ApplyError naming it', async t => {
  const dest = await destination(t, LISTEN)
  const fw = createDnsForwarder({
    forward: ipForward(dest.port, '127.0.0.3', 1, 7),
    listenHost: LISTEN,
    sourceAddress: SOURCE,
    logger: pino({ level: 'silent' }),
    metrics: createMetrics({ defaultMetrics: false })
  })
  const err = await fw.listen().then(() => null, (e: unknown) => e)
  t.type(err, ApplyError)
  t.match((err as ApplyError).message, `127.0.0.1:${dest.port}`)
  t.match((err as ApplyError).message, 'line 7')
  t.match((err as ApplyError).message, 'EADDRINUSE')
  await fw.close(0)
})

// ---- drain --------------------------------------------------------------------------------------

t.test('close(drain) stops accepting, lets a transfer in flight finish, then resolves', async t => {
  const dest = await destination(t, '127.0.0.3')
  const { fw, port } = await startForwarder(t, ipForward(0, '127.0.0.3', dest.port))
  const data = randomBytes(4 * 1024 * 1024)
  const sock = net.connect({ host: LISTEN, port, allowHalfOpen: true })
  t.teardown(() => { sock.destroy() })
  const got: Buffer[] = []
  sock.on('data', (c: Buffer) => got.push(c))
  const ended = once(sock, 'end')
  sock.write(data.subarray(0, 1024))
  await until(() => dest.seen[0] !== undefined && dest.seen[0].received > 0, 'the transfer to start')

  let closed = false
  const closing = fw.close(600_000).then(() => { closed = true })
  const refused = await new Promise<string>(resolve => {
    const late = net.connect({ host: LISTEN, port })
    late.once('connect', () => { late.destroy(); resolve('connected') })
    late.once('error', (err: NodeJS.ErrnoException) => { resolve(err.code ?? '') })
  })
  t.equal(refused, 'ECONNREFUSED', 'no new connections while draining')
  t.equal(closed, false, 'close waits for the transfer')
  t.equal(fw.ready(), false)

  sock.end(data.subarray(1024))
  await ended
  t.equal(Buffer.concat(got).toString().split('\n')[1], `digest ${sha(data)}`, 'the transfer finished intact')
  await closing
  t.equal(fw.stats().active, 0)
  t.equal(fw.stats().bound, null)
})

t.test('close(drain) resets what is still open when the drain time is up', async t => {
  const dest = await destination(t, '127.0.0.3')
  const { fw, port, metrics } = await startForwarder(t, ipForward(0, '127.0.0.3', dest.port))
  const sock = net.connect({ host: LISTEN, port })
  t.teardown(() => { sock.destroy() })
  const ended = clientEnd(sock)
  await until(() => dest.seen.length === 1 && sock.bytesRead > 0, 'the connection')
  await fw.close(50)
  t.equal(await ended, 'ECONNRESET', 'the idle client is cut with a reset')
  await until(() => dest.seen[0]!.end !== null, 'the destination to see the end')
  t.equal(dest.seen[0]!.end, 'ECONNRESET')
  t.equal(await metricValue(metrics, 'connectionOutcomes', { outcome: 'aborted' }), 1)
})

// ---- the set of forwarders ----------------------------------------------------------------------

t.test('createDnsProxy: update() adds, removes and retargets listeners without touching established connections', async t => {
  const [d3, d4] = await destinationsOnOnePort(t, ['127.0.0.3', '127.0.0.4'])
  const resolver = new FakeResolver()
  resolver.set(NAME, ['127.0.0.3'])
  resolver.set('other.example.test', ['127.0.0.4'])
  const metrics = createMetrics({ defaultMetrics: false })
  const { logger } = captureLog()
  const a = nameForward(0, d3!.port, NAME, 1)
  const proxy = createDnsProxy({ forwards: [a], listenHost: LISTEN, sourceAddress: SOURCE, resolver, logger, metrics })
  t.teardown(() => proxy.close(0))
  await proxy.listen()
  t.equal(proxy.ready(), true)
  const portA = proxy.stats()[0]!.bound!.port

  // An established connection on listener A, mid-transfer.
  const data = randomBytes(1024 * 1024)
  const sock = net.connect({ host: LISTEN, port: portA, allowHalfOpen: true })
  t.teardown(() => { sock.destroy() })
  const got: Buffer[] = []
  sock.on('data', (c: Buffer) => got.push(c))
  const ended = once(sock, 'end')
  sock.write(data.subarray(0, 1000))
  await until(() => d3!.seen[0] !== undefined && d3!.seen[0].received === 1000, 'the first bytes')

  // Reload 1: add B (IP target), keep A.
  const b = ipForward(0, '127.0.0.4', d4!.port, 2)
  await proxy.update([a, b])
  const stats1 = proxy.stats()
  t.equal(stats1.length, 2)
  t.equal(stats1[0]!.bound!.port, portA, 'A kept its listener')
  const portB = stats1[1]!.bound!.port
  t.equal((await exchange(portB, 'to b')).greeting, '127.0.0.4 127.0.0.2')

  // Reload 2: A points at another name now: new connections follow, the old one stays.
  await proxy.update([nameForward(0, d3!.port, 'other.example.test', 1), b])
  t.equal(proxy.stats()[0]!.bound!.port, portA)
  t.equal((await exchange(portA, 'retargeted')).greeting, '127.0.0.4 127.0.0.2')
  t.equal(resolver.watching(NAME), 0, 'the old name is no longer watched')

  // Reload 3: A removed. Its listener goes away, its established connection does not.
  await proxy.update([b])
  t.same(proxy.stats().map(s => s.bound?.port), [portB])
  const refused = await new Promise<string>(resolve => {
    const late = net.connect({ host: LISTEN, port: portA })
    late.once('connect', () => { late.destroy(); resolve('connected') })
    late.once('error', (err: NodeJS.ErrnoException) => { resolve(err.code ?? '') })
  })
  t.equal(refused, 'ECONNREFUSED', 'the removed listener is closed')

  sock.end(data.subarray(1000))
  await ended
  t.equal(Buffer.concat(got).toString().split('\n')[1], `digest ${sha(data)}`, 'the connection established before all reloads completed intact')
  t.equal(d3!.seen[0]!.remote, '127.0.0.2')
})

t.test('createDnsProxy: a listener that cannot open rolls back the others', async t => {
  const taken = await destination(t, LISTEN)
  const { logger } = captureLog()
  const proxy = createDnsProxy({
    forwards: [ipForward(0, '127.0.0.3', 1, 1), ipForward(taken.port, '127.0.0.3', 1, 2)],
    listenHost: LISTEN,
    sourceAddress: SOURCE,
    logger,
    metrics: createMetrics({ defaultMetrics: false })
  })
  t.teardown(() => proxy.close(0))
  const err = await proxy.listen().then(() => null, (e: unknown) => e)
  t.type(err, ApplyError)
  t.match((err as ApplyError).message, 'line 2')
  t.match((err as ApplyError).rolledBack, ['listener 0'])
  t.same(proxy.stats(), [], 'nothing left listening')
})

t.test('createDnsProxy: close(drain) also drains listeners retired by a reload', async t => {
  const dest = await destination(t, '127.0.0.3')
  const { logger } = captureLog()
  const f = ipForward(0, '127.0.0.3', dest.port, 1)
  const proxy = createDnsProxy({ forwards: [f], listenHost: LISTEN, sourceAddress: SOURCE, logger, metrics: createMetrics({ defaultMetrics: false }) })
  await proxy.listen()
  const port = proxy.stats()[0]!.bound!.port
  const sock = net.connect({ host: LISTEN, port })
  t.teardown(() => { sock.destroy() })
  const ended = clientEnd(sock)
  await until(() => dest.seen.length === 1 && sock.bytesRead > 0, 'the connection')
  await proxy.update([])
  t.same(proxy.stats(), [])
  t.equal(dest.seen[0]!.end, null, 'still open after the reload')
  await proxy.close(50)
  t.equal(await ended, 'ECONNRESET', 'cut when the shutdown drain ran out')
})
