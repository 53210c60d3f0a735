import t from 'tap'
import net from 'node:net'
import http from 'node:http'
import type { Socket } from 'node:net'
import { once } from 'node:events'
import { createHash } from 'node:crypto'
import { pipe } from '../../../src/proxy/pipe.js'
import { adoptAccepted, connectOwned, largeReadsInUse, readSideOf, LARGE_READ, SMALL_READ } from '../../../src/proxy/read-buffers.js'
import type { PipeOptions, PipeResult } from '../../../src/proxy/pipe.js'

/** what the helpers need from a test: cleanup registration */
type Test = Pick<typeof t, 'teardown'>

/** Polls cond until true; fails after deadlineMs (a guard against hangs, not a timing assertion). */
async function until (cond: () => boolean, what: string, deadlineMs = 20_000): Promise<void> {
  const end = Date.now() + deadlineMs
  while (!cond()) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`)
    await new Promise(resolve => setTimeout(resolve, 5))
  }
}

/** Collects everything a socket sends until its FIN; rejects on error. */
function readAll (sock: Socket): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = []
    sock.on('data', (c: Buffer) => chunks.push(c))
    sock.once('end', () => { resolve(Buffer.concat(chunks)) })
    sock.once('error', reject)
  })
}

/** The error (code) a socket ends with, or 'clean' for a FIN. */
function endState (sock: Socket): Promise<string> {
  return new Promise(resolve => {
    sock.on('data', () => {})
    sock.once('error', (err: NodeJS.ErrnoException) => { resolve(err.code ?? err.message) })
    sock.once('end', () => { resolve('clean') })
  })
}

interface Harness {
  /** the outside client, talking to the relay's a side */
  client: Socket
  /** the destination server's accepted socket (the far end of b) */
  server: Socket
  a: Socket
  b: Socket
  result: Promise<PipeResult>
}

/**
 * client → [listener: a] pipe [b →] destination server. Everything on 127.0.0.1, ports from 0,
 * every socket allowHalfOpen so half-close can be observed.
 */
async function harness (t: Test, opts: PipeOptions = {}, beforeRelay?: (client: Socket, a: Socket) => Promise<void>, owned = false): Promise<Harness> {
  const dest = net.createServer({ allowHalfOpen: true })
  dest.listen(0, '127.0.0.1')
  await once(dest, 'listening')
  t.teardown(() => { dest.close() })
  // owned: both relay sockets read into relay-owned buffers, as the dns-proxy forwarders' do
  const front = net.createServer({ allowHalfOpen: true, pauseOnConnect: owned })
  front.listen(0, '127.0.0.1')
  await once(front, 'listening')
  t.teardown(() => { front.close() })

  const accepted = once(front, 'connection') as Promise<[Socket]>
  const served = once(dest, 'connection') as Promise<[Socket]>
  const client = net.connect({ port: (front.address() as net.AddressInfo).port, host: '127.0.0.1', allowHalfOpen: true })
  t.teardown(() => { client.destroy() })
  const [accepted0] = await accepted
  const a = owned ? adoptAccepted(accepted0) : accepted0
  t.teardown(() => { a.destroy() })
  if (beforeRelay !== undefined) await beforeRelay(client, a)
  const bOpts = { port: (dest.address() as net.AddressInfo).port, host: '127.0.0.1', allowHalfOpen: true }
  const b = owned ? connectOwned(bOpts) : net.connect(bOpts)
  t.teardown(() => { b.destroy() })
  await once(b, 'connect')
  const [server] = await served
  t.teardown(() => { server.destroy() })
  return { client, server, a, b, result: pipe(a, b, opts) }
}

for (const owned of [false, true]) {
  t.test(owned ? 'relay-owned read buffers (connectOwned, adoptAccepted)' : 'sockets read through their data events', async t => {
  t.test('relays both ways, counts the bytes and reports them per chunk', async t => {
    const counted = { up: 0, down: 0 }
    const h = await harness(t, { onBytes: (dir, n) => { counted[dir] += n } }, undefined, owned)
    const upData = Buffer.alloc(300_000, 'u')
    const downData = Buffer.alloc(500_000, 'd')
    const serverGot = readAll(h.server)
    const clientGot = readAll(h.client)
    h.client.end(upData)
    h.server.end(downData)
    t.same(await serverGot, upData)
    t.same(await clientGot, downData)
    const r = await h.result
    t.equal(r.outcome, 'ok')
    t.equal(r.up, upData.length)
    t.equal(r.down, downData.length)
    t.same(counted, { up: upData.length, down: downData.length })
    t.equal(r.error, undefined)
  })

  t.test('half-close: the client stops sending, the server keeps answering', async t => {
    const h = await harness(t, {}, undefined, owned)
    const serverGot = readAll(h.server)
    h.client.end('request')
    t.equal((await serverGot).toString(), 'request', 'server saw the FIN after the data')
    const clientGot = readAll(h.client)
    // Still writable after the client's FIN: the relay must not have closed this direction.
    h.server.write('answer part 1, ')
    h.server.end('part 2')
    t.equal((await clientGot).toString(), 'answer part 1, part 2')
    t.equal((await h.result).outcome, 'ok')
  })

  t.test('half-close: the server stops sending, the client keeps sending', async t => {
    const h = await harness(t, {}, undefined, owned)
    const clientGot = readAll(h.client)
    h.server.end('banner')
    t.equal((await clientGot).toString(), 'banner')
    const serverGot = readAll(h.server)
    h.client.write('more ')
    h.client.end('data')
    t.equal((await serverGot).toString(), 'more data')
    const r = await h.result
    t.equal(r.outcome, 'ok')
    t.equal(r.up, 9)
    t.equal(r.down, 6)
  })

  for (const [from, to, side] of [['client', 'server', 'a'], ['server', 'client', 'b']] as const) {
    t.test(`a reset from the ${from} resets the ${to} side`, async t => {
      const h = await harness(t, {}, undefined, owned)
      const otherEnd = endState(h[to])
      h[from].write('x')
      await until(() => h[to].bytesRead > 0, `first byte at the ${to}`)
      h[from].resetAndDestroy()
      t.equal(await otherEnd, 'ECONNRESET')
      const r = await h.result
      t.equal(r.outcome, 'error')
      t.equal(r.errorSide, side)
    })
  }

  t.test('an idle relay is reset after idleTimeoutMs, on both sides', async t => {
    const h = await harness(t, { idleTimeoutMs: 100 }, undefined, owned)
    const clientEnd = endState(h.client)
    const serverEnd = endState(h.server)
    const r = await h.result
    t.equal(r.outcome, 'timeout')
    t.equal(await clientEnd, 'ECONNRESET')
    t.equal(await serverEnd, 'ECONNRESET')
  })

  t.test('traffic in either direction keeps a relay with an idle timeout alive', async t => {
    const h = await harness(t, { idleTimeoutMs: 1000 }, undefined, owned)
    const serverGot = readAll(h.server)
    const clientGot = readAll(h.client)
    // 30 writes 100 ms apart, alternating direction, span about three idle timeouts; none may fire.
    for (let i = 0; i < 30; i++) {
      (i % 2 === 0 ? h.client : h.server).write('.')
      await new Promise(resolve => setTimeout(resolve, 100))
    }
    h.client.end()
    h.server.end()
    t.equal((await serverGot).length, 15)
    t.equal((await clientGot).length, 15)
    t.equal((await h.result).outcome, 'ok')
  })

  t.test('aborting the signal resets both sides', async t => {
    const ac = new AbortController()
    const h = await harness(t, { signal: ac.signal }, undefined, owned)
    const clientEnd = endState(h.client)
    const serverEnd = endState(h.server)
    ac.abort()
    t.equal((await h.result).outcome, 'aborted')
    t.equal(await clientEnd, 'ECONNRESET')
    t.equal(await serverEnd, 'ECONNRESET')
  })

  t.test('a socket destroyed from outside is not passed on as a clean end', async t => {
    const h = await harness(t, {}, undefined, owned)
    const serverEnd = endState(h.server)
    h.a.destroy()
    t.equal(await serverEnd, 'ECONNRESET')
    t.equal((await h.result).outcome, 'aborted')
  })

  t.test('a socket already gone on entry: the other one is reset and the promise resolves', async t => {
    const dest = net.createServer()
    dest.listen(0, '127.0.0.1')
    await once(dest, 'listening')
    t.teardown(() => { dest.close() })
    const served = once(dest, 'connection') as Promise<[Socket]>
    const b = net.connect({ port: (dest.address() as net.AddressInfo).port, host: '127.0.0.1' })
    t.teardown(() => { b.destroy() })
    await once(b, 'connect')
    const [server] = await served
    const serverEnd = endState(server)
    const gone = new net.Socket()
    gone.destroy()
    const r = await pipe(gone, b)
    t.equal(r.outcome, 'aborted')
    t.equal(await serverEnd, 'ECONNRESET')
  })

  t.test('backpressure: a destination that does not read stalls the client instead of filling memory', async t => {
    const h = await harness(t, {}, undefined, owned)
    h.server.pause()
    const size = 64 * 1024 * 1024
    const data = Buffer.alloc(size)
    for (let i = 0; i < size; i += 4096) data.writeUInt32BE(i, i)
    // Written in 256 KiB pieces, ignoring backpressure on purpose: what the network does not take
    // stays visible in client.writableLength.
    for (let i = 0; i < size; i += 256 * 1024) h.client.write(data.subarray(i, i + 256 * 1024))
    // The chain is full once the relay has paused its reading side.
    await until(() => h.a.isPaused(), 'the relay to pause the client side')
    const buffered = h.b.writableLength
    t.ok(buffered <= 1024 * 1024, `relay holds at most 1 MiB unsent (holds ${buffered})`)
    t.ok(h.client.writableLength > 32 * 1024 * 1024, `most of the data still waits at the client (${h.client.writableLength})`)
    const hash = createHash('sha256')
    let got = 0
    h.server.on('data', (c: Buffer) => { hash.update(c); got += c.length })
    h.server.resume()
    h.client.end()
    await once(h.server, 'end')
    t.equal(got, size)
    t.equal(hash.digest('hex'), createHash('sha256').update(data).digest('hex'))
    h.server.end()
    t.equal((await h.result).outcome, 'ok')
  })

  t.test('a FIN that arrived before the relay started is forwarded (the client half-closed while upstream was connecting)', async t => {
    const h = await harness(t, {}, async (client, a) => {
      // Nothing sent, then FIN: the accepted socket reads on its own and emits 'end' before pipe() exists.
      a.resume()
      client.end()
      await once(a, 'end')
      a.pause()
      t.ok(a.readableEnded, 'the FIN was consumed before the relay')
    }, owned)
    t.equal((await readAll(h.server)).length, 0, 'the destination sees the FIN (and no bytes)')
    const clientGot = readAll(h.client)
    h.server.end('answer')
    t.equal((await clientGot).toString(), 'answer', 'and the answer still reaches the client')
    t.equal((await h.result).outcome, 'ok')
  })
  })
}

t.test('relay-owned buffers: bytes a client sends before the relay starts are kept, read on, and forwarded first', async t => {
  const h = await harness(t, {}, async (client, a) => {
    // A client that speaks first, while the upstream connect is still in progress.
    client.write('early ')
    await until(() => readSideOf(a)?.earlyBytes === 6, 'the first early bytes to be read and kept')
    client.write('request, ')
    await until(() => readSideOf(a)?.earlyBytes === 15, 'the socket to read on: the second write is kept too')
    t.equal(readSideOf(a)?.held, false, 'not held: a reset meanwhile would be seen')
  }, true)
  const serverGot = readAll(h.server)
  const clientGot = readAll(h.client)
  h.client.end('then the rest')
  h.server.end('banner and answer')
  t.equal((await serverGot).toString(), 'early request, then the rest')
  t.equal((await clientGot).toString(), 'banner and answer')
  t.equal((await h.result).outcome, 'ok')
})

t.test('relay-owned buffers: a bulk transfer moves to the large buffer and back to the small one after it', async t => {
  const h = await harness(t, {}, undefined, true)
  const side = readSideOf(h.a)
  t.ok(side !== undefined, 'the adopted socket has a read side')
  const sizes = new Set<number>()
  const serverGot: Buffer[] = []
  let got = 0
  h.server.on('data', (c: Buffer) => { serverGot.push(c); got += c.length })
  // Bulk: 8 MiB in 1 MiB writes; reads fill the small buffer, then the large one.
  const bulk = Buffer.alloc(8 * 1024 * 1024)
  for (let i = 0; i < bulk.length; i += 4) bulk.writeUInt32BE(i, i)
  for (let i = 0; i < bulk.length; i += 1024 * 1024) h.client.write(bulk.subarray(i, i + 1024 * 1024))
  await until(() => got === bulk.length, 'the bulk data at the server')
  sizes.add((side as unknown as { buf: Buffer }).buf.length)
  // Then a small request: the next read is short, and the buffer after it is the small one again.
  h.client.write('small')
  await until(() => got === bulk.length + 5, 'the small write at the server')
  const after = (side as unknown as { buf: Buffer }).buf.length
  t.ok(sizes.has(LARGE_READ), `large buffer during the bulk transfer (saw ${[...sizes].join(', ')})`)
  t.equal(after, SMALL_READ, 'small buffer once the traffic is small again')
  t.ok(Buffer.concat(serverGot).equals(Buffer.concat([bulk, Buffer.from('small')])), 'every byte arrived in order')
  h.client.end()
  h.server.end()
  t.equal((await h.result).outcome, 'ok')
})


t.test('relay-owned buffers: a relay that ends while a side holds a large buffer gives it back to the budget', async t => {
  const ac = new AbortController()
  const h = await harness(t, { signal: ac.signal }, undefined, true)
  let got = 0
  h.server.on('data', (c: Buffer) => { got += c.length })
  h.server.on('error', () => {})
  h.client.on('error', () => {})
  const bulk = Buffer.alloc(4 * 1024 * 1024, 'b')
  h.client.write(bulk)
  await until(() => got === bulk.length, 'the bulk data at the server')
  t.ok(largeReadsInUse() >= 1, `the client side reads into a large buffer (${largeReadsInUse()} in use)`)
  ac.abort()
  t.equal((await h.result).outcome, 'aborted')
  await until(() => largeReadsInUse() === 0, 'the large buffer back in the budget')
  t.equal(largeReadsInUse(), 0)
})

t.test('the socket of an http.Server connect event is adopted in place: one socket, counted by the server, read through its read side', async t => {
  const dest = net.createServer({ allowHalfOpen: true }, s => { s.pipe(s) })
  dest.listen(0, '127.0.0.1')
  await once(dest, 'listening')
  t.teardown(() => { dest.close() })
  const server = http.createServer()
  const seen: Array<{ same: boolean, side: boolean }> = []
  server.on('connect', (_req: http.IncomingMessage, socket: Socket, head: Buffer) => {
    const a = adoptAccepted(socket)
    seen.push({ same: a === socket, side: readSideOf(a) !== undefined })
    const b = connectOwned({ port: (dest.address() as net.AddressInfo).port, host: '127.0.0.1', allowHalfOpen: true })
    b.once('connect', () => {
      a.write('HTTP/1.1 200 Connection Established\r\n\r\n')
      if (head.length > 0) b.write(head)
      void pipe(a, b)
    })
  })
  server.listen(0, '127.0.0.1')
  await once(server, 'listening')
  t.teardown(() => { server.close() })
  const connections = (): Promise<number> => new Promise((resolve, reject) => { server.getConnections((err, n) => { if (err !== null) reject(err); else resolve(n) }) })

  const client = net.connect({ port: (server.address() as net.AddressInfo).port, host: '127.0.0.1', allowHalfOpen: true })
  t.teardown(() => { client.destroy() })
  const got = readAll(client)
  // the bytes after the request head arrive with it: they are the event's head, relayed first
  client.write('CONNECT echo.example:7 HTTP/1.1\r\nHost: echo.example:7\r\n\r\nfirst ')
  await until(() => seen.length === 1, 'the connect event')
  t.same(seen, [{ same: true, side: true }], 'the accepted socket itself, with a read side')
  client.write('second')
  await until(() => client.bytesRead >= 'HTTP/1.1 200 Connection Established\r\n\r\nfirst second'.length, 'the echo')
  t.equal(await connections(), 1, 'the server counts the tunnel as its connection')
  client.end()
  t.equal((await got).toString(), 'HTTP/1.1 200 Connection Established\r\n\r\nfirst second', 'both ways, in order, then the FIN')
  await until(() => client.destroyed || client.readableEnded, 'the end')
  let n = 1
  await until(() => { void connections().then(x => { n = x }); return n === 0 }, 'the server to count it closed')
  t.equal(n, 0)
})
