/**
 * The http-proxy server on loopback with real sockets: 127.0.0.1 is the proxy, 127.0.0.2 stands in
 * for EGRESS_SOURCE, destinations listen on 127.0.0.3 / 127.0.0.4. curl is the client where a real
 * client is the point; raw sockets where the exact bytes on the wire are the point.
 */
import t, { type Test } from 'tap'
import { execFile, spawn } from 'node:child_process'
import { createHash, randomBytes } from 'node:crypto'
import { readdirSync, writeFileSync, mkdtempSync, rmSync } from 'node:fs'
import { createServer as createHttpServer, type IncomingHttpHeaders, type Server } from 'node:http'
import { connect, createServer as createNetServer, type AddressInfo, type Socket } from 'node:net'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { Writable } from 'node:stream'
import { pino } from 'pino'
import type { HttpProxyConfig, IpAddress } from '../../../src/config/types.js'
import { DnsError } from '../../../src/errors.js'
import { createMetrics } from '../../../src/observe/metrics.js'
import type { NameResolver } from '../../../src/proxy/acl.js'
import { createHttpProxyServer, downstreamResponseHeaders, maxConnectionsForFdLimit, softFdLimit, upstreamRequestHeaders, type HttpProxyServer, type ProxyLimits } from '../../../src/proxy/http-proxy.js'
import { aclRules } from '../../helpers/acl.js'

type T = Test

const SOURCE = '127.0.0.2'
const DEST = '127.0.0.3'
const DEST2 = '127.0.0.4'

// ---- helpers -----------------------------------------------------------------------------------

const rules = aclRules

/** An honest in-memory resolver: a zone of names; unknown names are NXDOMAIN. */
class FakeResolver implements NameResolver {
  readonly queries: string[] = []
  constructor (readonly zone: Record<string, string[] | DnsError>) {}
  async resolve (name: string): Promise<{ addresses: readonly IpAddress[] }> {
    this.queries.push(name)
    const entry = this.zone[name]
    if (entry instanceof DnsError) throw entry
    if (entry === undefined) throw new DnsError('ENOTFOUND', name, 'no such name')
    return { addresses: entry.map(a => ({ address: a, family: a.includes(':') ? 6 : 4 })) }
  }
}

interface Logged { [k: string]: unknown }

/** Awaits a promise with a deadline, so a broken behaviour fails the test instead of hanging it. */
async function within<V> (what: string, promise: Promise<V>, timeoutMs = 10_000): Promise<V> {
  let timer: NodeJS.Timeout | undefined
  const timeout = new Promise<never>((_resolve, reject) => { timer = setTimeout(() => reject(new Error(`timed out waiting for ${what}`)), timeoutMs) })
  try { return await Promise.race([promise, timeout]) } finally { clearTimeout(timer) }
}

async function waitFor (what: string, cond: () => boolean, timeoutMs = 10_000): Promise<void> {
  const deadline = Date.now() + timeoutMs
  while (!cond()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`)
    await new Promise(resolve => setTimeout(resolve, 20))
  }
}

interface ProxyFixture {
  proxy: HttpProxyServer
  port: number
  url: string
  logs: Logged[]
  metrics: ReturnType<typeof createMetrics>
  resolver: FakeResolver
}

async function startProxy (t: T, acl: string, opts: {
  zone?: Record<string, string[] | DnsError>
  clients?: HttpProxyConfig['clients']
  connectPorts?: HttpProxyConfig['connectPorts']
  accessLog?: boolean
  limits?: Partial<ProxyLimits>
  source?: string
  listenHost?: string
} = {}): Promise<ProxyFixture> {
  const logs: Logged[] = []
  const sink = new Writable({
    write (chunk: Buffer, _enc, cb) {
      for (const line of chunk.toString().split('\n')) if (line !== '') logs.push(JSON.parse(line) as Logged)
      cb()
    }
  })
  const metrics = createMetrics({ defaultMetrics: false })
  const resolver = new FakeResolver(opts.zone ?? {})
  const config: HttpProxyConfig = { port: 8080, connectPorts: opts.connectPorts ?? '*', clients: opts.clients ?? null, accessLog: opts.accessLog ?? true, acl: rules(acl) }
  const proxy = createHttpProxyServer({ config, sourceAddress: opts.source ?? SOURCE, resolver, logger: pino({ level: 'debug' }, sink), metrics, limits: opts.limits })
  t.teardown(() => proxy.close(0))
  const host = opts.listenHost ?? '127.0.0.1'
  const addr = await proxy.listen(host, 0)
  const hostPart = host.includes(':') ? `[${host}]` : host
  return { proxy, port: addr.port, url: `http://${hostPart}:${addr.port}`, logs, metrics, resolver }
}

interface Seen { method: string, url: string, headers: IncomingHttpHeaders, remote: string, body: Buffer }

/** A destination HTTP server that records what it saw and answers by path. */
async function startOrigin (t: T, host = DEST): Promise<{ server: Server, port: number, seen: Seen[], sockets: Set<Socket> }> {
  const seen: Seen[] = []
  const sockets = new Set<Socket>()
  const server = createHttpServer((req, res) => {
    const chunks: Buffer[] = []
    req.on('data', (c: Buffer) => chunks.push(c))
    req.on('end', () => {
      const body = Buffer.concat(chunks)
      seen.push({ method: req.method ?? '', url: req.url ?? '', headers: req.headers, remote: req.socket.remoteAddress ?? '', body })
      const path = (req.url ?? '').split('?')[0]
      if (path === '/sha256') {
        res.end(createHash('sha256').update(body).digest('hex'))
      } else if (path === '/chunked') {
        // 200 chunks of 10 KiB without a Content-Length: a chunked response
        const rnd = randomBytes(10 * 1024)
        let i = 0
        const hash = createHash('sha256')
        res.setHeader('x-chunks', '200')
        const more = (): void => {
          while (i < 200) {
            i++
            hash.update(rnd)
            if (!res.write(rnd)) { res.once('drain', more); return }
          }
          res.addTrailers({})
          res.end()
          lastChunkedHash = hash.digest('hex')
        }
        more()
      } else if (path === '/slow-stream') {
        // The first 16 KiB, then nothing: the response stays in flight until someone closes the connection
        res.writeHead(200, { 'content-length': String(1024 * 1024) })
        res.write(Buffer.alloc(16 * 1024, 0x61))
      } else if (path === '/hop') {
        res.writeHead(200, [
          'Connection', 'close, X-Upstream-Secret', 'X-Upstream-Secret', '1', 'Keep-Alive', 'timeout=99',
          'Proxy-Authenticate', 'Basic', 'Set-Cookie', 'a=1', 'Set-Cookie', 'b=2', 'Content-Length', '2'
        ])
        res.end('ok')
      } else if (path === '/hang') {
        // never answers
      } else if (path === '/reset-mid-body') {
        res.writeHead(200, { 'content-length': '1000000' })
        res.write(Buffer.alloc(1000))
        setImmediate(() => req.socket.destroy())
      } else {
        res.setHeader('content-type', 'text/plain')
        res.end(`hello from ${host} ${req.method} ${req.url}`)
      }
    })
  })
  server.on('connection', s => { sockets.add(s); s.on('close', () => sockets.delete(s)) })
  await new Promise<void>(resolve => server.listen(0, host, resolve))
  t.teardown(() => { server.closeAllConnections(); server.close() })
  return { server, port: (server.address() as AddressInfo).port, seen, sockets }
}
let lastChunkedHash = ''

/** A TCP echo server; on the client's FIN it answers "bye" and closes its side (half-close test). */
async function startEcho (t: T, host = DEST2): Promise<{ port: number, remotes: string[] }> {
  const remotes: string[] = []
  const server = createNetServer({ allowHalfOpen: true }, socket => {
    remotes.push(socket.remoteAddress ?? '')
    socket.on('error', () => {})
    socket.on('data', d => socket.write(d))
    socket.on('end', () => socket.end('bye'))
  })
  await new Promise<void>(resolve => server.listen(0, host, resolve))
  t.teardown(() => server.close())
  return { port: (server.address() as AddressInfo).port, remotes }
}

interface CurlResult { code: number, stdout: string, stderr: string }
function curl (args: string[]): Promise<CurlResult> {
  return new Promise(resolve => {
    execFile('curl', ['-sS', '--max-time', '30', '--noproxy', '', ...args], { maxBuffer: 64 * 1024 * 1024, env: {} }, (err, stdout, stderr) => {
      resolve({ code: err === null ? 0 : typeof err.code === 'number' ? err.code : -1, stdout, stderr })
    })
  })
}

/** Sends raw bytes, returns everything the proxy answers until it closes (or the deadline). */
function raw (port: number, text: string | Buffer, opts: { host?: string, halfClose?: boolean } = {}): Promise<string> {
  return new Promise((resolve, reject) => {
    const socket = connect({ host: opts.host ?? '127.0.0.1', port })
    const chunks: Buffer[] = []
    const timer = setTimeout(() => { socket.destroy(); reject(new Error(`no close from the proxy; got: ${Buffer.concat(chunks).toString()}`)) }, 15_000)
    socket.on('data', c => chunks.push(c))
    socket.on('error', () => {})
    socket.on('close', () => { clearTimeout(timer); resolve(Buffer.concat(chunks).toString('latin1')) })
    socket.write(text)
    if (opts.halfClose === true) socket.end()
  })
}
const statusOf = (response: string): number => Number(/^HTTP\/1\.1 (\d{3})/.exec(response)?.[1] ?? 0)

/** Opens a CONNECT tunnel on a raw socket; resolves with the socket after the 200 (or the refusal text). */
function openTunnel (port: number, authority: string): Promise<{ socket: Socket, status: number, head: string }> {
  return new Promise((resolve, reject) => {
    const socket = connect({ host: '127.0.0.1', port, allowHalfOpen: true })
    socket.on('error', reject)
    let buf = Buffer.alloc(0)
    const onData = (c: Buffer): void => {
      buf = Buffer.concat([buf, c])
      const end = buf.indexOf('\r\n\r\n')
      if (end < 0) return
      socket.removeListener('data', onData)
      const head = buf.subarray(0, end).toString()
      const rest = buf.subarray(end + 4)
      if (rest.length > 0) socket.unshift(rest)
      resolve({ socket, status: statusOf(head), head })
    }
    socket.on('data', onData)
    socket.write(`CONNECT ${authority} HTTP/1.1\r\nHost: ${authority}\r\n\r\n`)
  })
}

const decisions = (logs: Logged[]): Logged[] => logs.filter(l => l.event === 'acl')
const fdCount = (): number => readdirSync('/proc/self/fd').length
const handleCount = (): number => (process as unknown as { _getActiveHandles (): unknown[] })._getActiveHandles().length

// ---- forwarding ----------------------------------------------------------------------------------

t.test('curl -x GET is forwarded from the egress source with Host from the URI, Via added, hop-by-hop and Proxy-* stripped', async t => {
  const origin = await startOrigin(t)
  const p = await startProxy(t, 'api.example.test', { zone: { 'api.example.test': [DEST] } })
  const r = await curl(['--path-as-is', '-x', p.url, '-H', 'Proxy-Authorization: Basic c2VjcmV0', '-H', 'Connection: X-Client-Secret', '-H', 'X-Client-Secret: 1',
    '-H', 'Keep-Alive: 300', '-H', 'X-End-To-End: kept', `http://API.Example.test:${origin.port}/a/../b?q=%2e`])
  t.equal(r.code, 0, r.stderr)
  t.equal(r.stdout, `hello from ${DEST} GET /a/../b?q=%2e`, 'path forwarded byte for byte')
  const s = origin.seen[0]!
  t.equal(s.remote, SOURCE, 'the destination sees the egress source address')
  t.equal(s.headers.host, `api.example.test:${origin.port}`)
  t.equal(s.headers.via, '1.1 egress-router')
  t.equal(s.headers['x-end-to-end'], 'kept')
  for (const h of ['proxy-authorization', 'proxy-connection', 'x-client-secret', 'keep-alive']) t.equal(s.headers[h], undefined, `${h} not forwarded`)
  const d = decisions(p.logs)
  t.equal(d.length, 1, 'one log line per decision')
  t.match(d[0], { client: '127.0.0.1', method: 'GET', target: `api.example.test:${origin.port}`, address: DEST, action: 'allow', rule: '1', ruleText: 'api.example.test' })
  const m = await p.metrics.registry.getSingleMetricAsString('egress_router_acl_decisions_total')
  t.match(m, /egress_router_acl_decisions_total\{action="allow",rule="1"\} 1/)
})

t.test('response hop-by-hop fields and those named in Connection are stripped; repeated Set-Cookie survive', async t => {
  const origin = await startOrigin(t)
  const p = await startProxy(t, '*')
  const r = await curl(['-i', '-x', p.url, `http://${DEST}:${origin.port}/hop`])
  t.equal(r.code, 0, r.stderr)
  const head = r.stdout.split('\r\n\r\n')[0]!.toLowerCase()
  t.notMatch(head, /x-upstream-secret/)
  t.notMatch(head, /proxy-authenticate/)
  t.notMatch(head, /timeout=99/)
  t.match(head, /set-cookie: a=1\r\nset-cookie: b=2/)
  t.match(head, /via: 1\.1 egress-router/)
})

t.test('the fields a Connection header names are dropped per message, also when one text is seen again and again', async t => {
  const names = (flat: readonly string[]): string[] => flat.filter((_, i) => i % 2 === 0).map(n => n.toLowerCase())
  const fields = (connection: string | undefined): IncomingHttpHeaders =>
    ({ ...(connection === undefined ? {} : { connection }), 'x-a': '1', 'x-b': '2', 'content-type': 'text/plain' })
  for (let round = 0; round < 3; round++) {
    t.same(names(downstreamResponseHeaders(fields('X-A'), false)), ['x-b', 'content-type', 'via'], `round ${round}: x-a named`)
    t.same(names(downstreamResponseHeaders(fields('x-b, keep-alive'), false)), ['x-a', 'content-type', 'via'], `round ${round}: x-b named`)
    t.same(names(downstreamResponseHeaders(fields(undefined), false)), ['x-a', 'x-b', 'content-type', 'via'], `round ${round}: none named`)
  }
  t.same(names(downstreamResponseHeaders({ connection: ['x-a', 'x-b'] as unknown as string, 'x-a': '1', 'x-b': '2', 'x-c': '3' }, true)), ['x-c', 'via', 'connection'],
    'two Connection lines both count')
  // past the memo's bound (256 texts) it starts over and still answers right
  for (let i = 0; i < 600; i++) {
    const kept = names(downstreamResponseHeaders({ connection: `x-${i}`, [`x-${i}`]: 'v', [`x-${i + 1}`]: 'w' }, false))
    if (kept.includes(`x-${i}`) || !kept.includes(`x-${i + 1}`)) t.fail(`text ${i}: ${kept.join(',')}`)
  }
  const up = names(upstreamRequestHeaders(['Connection', 'X-Secret, close', 'X-Secret', 's', 'Content-Length', '0', 'Host', 'h'], 'dest.test'))
  t.same(up, ['host', 'content-length', 'via'], 'Content-Length survives being named; the client\'s Host is replaced')
})

t.test('POST of several MB arrives intact (checksum), streamed both ways', async t => {
  const origin = await startOrigin(t)
  const p = await startProxy(t, '*')
  const dir = mkdtempSync(join(tmpdir(), 'egress-proxy-'))
  t.teardown(() => rmSync(dir, { recursive: true, force: true }))
  const data = randomBytes(8 * 1024 * 1024 + 123)
  writeFileSync(join(dir, 'body'), data)
  const r = await curl(['-x', p.url, '--data-binary', `@${join(dir, 'body')}`, `http://${DEST}:${origin.port}/sha256`])
  t.equal(r.code, 0, r.stderr)
  t.equal(r.stdout, createHash('sha256').update(data).digest('hex'))
  const chunked = await curl(['-x', p.url, '-H', 'Transfer-Encoding: chunked', '--data-binary', `@${join(dir, 'body')}`, `http://${DEST}:${origin.port}/sha256`])
  t.equal(chunked.stdout, createHash('sha256').update(data).digest('hex'), 'chunked upload')
  t.equal(origin.seen[1]!.headers['transfer-encoding'], 'chunked', 'a chunked body stays framed upstream')
  const bytes = await p.metrics.registry.getSingleMetricAsString('egress_router_bytes_total')
  t.match(bytes, new RegExp(`direction="upstream"\\} ${2 * data.length}`))
})

t.test('a chunked response is relayed intact', async t => {
  const origin = await startOrigin(t)
  const p = await startProxy(t, '*')
  const dir = mkdtempSync(join(tmpdir(), 'egress-proxy-'))
  t.teardown(() => rmSync(dir, { recursive: true, force: true }))
  const out = join(dir, 'out')
  const r = await curl(['-x', p.url, '-o', out, '-D', '-', `http://${DEST}:${origin.port}/chunked`])
  t.equal(r.code, 0, r.stderr)
  t.match(r.stdout.toLowerCase(), /transfer-encoding: chunked/)
  const { readFileSync } = await import('node:fs')
  const got = readFileSync(out)
  t.equal(got.length, 200 * 10 * 1024)
  t.equal(createHash('sha256').update(got).digest('hex'), lastChunkedHash)
})

t.test('upstream connections are kept alive and reused', async t => {
  const origin = await startOrigin(t)
  const p = await startProxy(t, '*')
  let connections = 0
  origin.server.on('connection', () => connections++)
  const u = `http://${DEST}:${origin.port}/x`
  const r = await curl(['-x', p.url, u, u, u])
  t.equal(r.code, 0, r.stderr)
  t.equal(origin.seen.length, 3)
  t.equal(connections, 1, 'three requests, one upstream connection')
})

// ---- CONNECT -------------------------------------------------------------------------------------

t.test('curl -p -x tunnels through CONNECT from the egress source', async t => {
  const origin = await startOrigin(t)
  const p = await startProxy(t, 'api.example.test', { zone: { 'api.example.test': [DEST] } })
  const r = await curl(['-p', '-x', p.url, `http://api.example.test:${origin.port}/via-tunnel`])
  t.equal(r.code, 0, r.stderr)
  t.equal(r.stdout, `hello from ${DEST} GET /via-tunnel`)
  t.equal(origin.seen[0]!.remote, SOURCE)
  t.equal(origin.seen[0]!.headers.via, undefined, 'a tunnel is opaque')
  t.match(decisions(p.logs)[0], { method: 'CONNECT', action: 'allow', address: DEST })
})

t.test('a raw TCP tunnel echoes and passes half-close both ways', async t => {
  const echo = await startEcho(t)
  const p = await startProxy(t, DEST2)
  const { socket, status } = await openTunnel(p.port, `${DEST2}:${echo.port}`)
  t.equal(status, 200)
  const received: Buffer[] = []
  socket.on('data', c => received.push(c))
  const ended = new Promise<void>(resolve => socket.once('end', resolve))
  const closed = new Promise<void>(resolve => socket.once('close', resolve))
  socket.write('ping ')
  await waitFor('echo', () => Buffer.concat(received).toString() === 'ping ')
  socket.write('pong ')
  // Our FIN travels to the echo server, which answers after it: the tunnel must still carry that.
  socket.end()
  await within('their FIN', ended)
  t.equal(Buffer.concat(received).toString(), 'ping pong bye', 'data sent after our FIN came back, then their FIN')
  await within('the tunnel to close', closed)
  t.same(echo.remotes, [SOURCE])
  await waitFor('proxy connection gone', () => p.proxy.activeConnections() === 0)
  const bytes = await p.metrics.registry.getSingleMetricAsString('egress_router_bytes_total')
  t.match(bytes, /direction="upstream"\} 10/)
  t.match(bytes, /direction="downstream"\} 13/)
})

t.test('bytes sent right behind the CONNECT line reach the destination', async t => {
  const echo = await startEcho(t)
  const p = await startProxy(t, '*')
  const answer = await raw(p.port, `CONNECT ${DEST2}:${echo.port} HTTP/1.1\r\nHost: x\r\n\r\nearly`, { halfClose: true })
  t.equal(statusOf(answer), 200)
  t.match(answer, /\r\n\r\nearlybye$/)
})

t.test('CONNECT ports are limited to connectPorts', async t => {
  const echo = await startEcho(t)
  const p = await startProxy(t, '*', { connectPorts: [443] })
  const { status, head } = await openTunnel(p.port, `${DEST2}:${echo.port}`)
  t.equal(status, 403)
  t.ok(head.length > 0)
  t.same(echo.remotes, [], 'nothing reached the destination')
  const body = await raw(p.port, `CONNECT ${DEST2}:${echo.port} HTTP/1.1\r\n\r\n`)
  t.match(body, new RegExp(`CONNECT to port ${echo.port} is not allowed`))
})

// ---- the ACL and its bypasses -------------------------------------------------------------------

t.test('every ACL form allows and denies through the proxy', async t => {
  const origin = await startOrigin(t)
  const origin2 = await startOrigin(t, DEST2)
  const p = await startProxy(t, `
    api.example.test
    !bad.example.test
    *.example.test
    ${DEST}
    !127.0.0.4/32
  `, { zone: { 'api.example.test': [DEST], 'x.y.example.test': [DEST], 'bad.example.test': [DEST], 'other.test': [DEST], 'internal.test': [DEST2] } })
  const get = async (url: string): Promise<number> => statusOf(await raw(p.port, `GET ${url} HTTP/1.1\r\nHost: whatever\r\nConnection: close\r\n\r\n`))
  t.equal(await get(`http://api.example.test:${origin.port}/`), 200, 'exact name')
  t.equal(await get(`http://x.y.example.test:${origin.port}/`), 200, '*.domain')
  t.equal(await get(`http://bad.example.test:${origin.port}/`), 403, '!name before *.domain')
  t.equal(await get(`http://${DEST}:${origin.port}/`), 200, 'single address')
  t.equal(await get(`http://other.test:${origin.port}/`), 200, 'a name resolving into an allowed address')
  t.equal(await get(`http://elsewhere.test:${origin.port}/`), 503, 'not denied by name, but does not resolve')
  t.equal(await get(`http://${DEST2}:${origin2.port}/`), 403, 'denied range')
  t.equal(await get(`http://127.0.0.5:${origin2.port}/`), 403, 'an address no rule allows')
  t.equal(await get(`http://internal.test:${origin2.port}/`), 403, 'a name resolving into a denied range')
  t.same(p.resolver.queries.includes('bad.example.test'), false, 'a denied name is not even looked up')
  t.equal(origin2.seen.length, 0)
  const d = decisions(p.logs)
  t.same(d.map(x => `${x.action}:${x.rule}`), ['allow:1', 'allow:3', 'deny:2', 'allow:4', 'allow:4', 'deny:5', 'deny:default', 'deny:5'])
})

t.test('EGRESS_HTTP_PROXY_ACCESS_LOG=off: allowed requests and tunnels are counted, not logged; denials are still logged', async t => {
  const origin = await startOrigin(t)
  const p = await startProxy(t, `!${DEST2}\n${DEST}`, { accessLog: false })
  const get = async (url: string): Promise<number> => statusOf(await raw(p.port, `GET ${url} HTTP/1.1\r\nHost: whatever\r\nConnection: close\r\n\r\n`))
  t.equal(await get(`http://${DEST}:${origin.port}/`), 200)
  const tunnel = await openTunnel(p.port, `${DEST}:${origin.port}`)
  t.equal(tunnel.status, 200)
  tunnel.socket.destroy()
  t.equal(await get(`http://${DEST2}:${origin.port}/`), 403)
  t.same(decisions(p.logs).map(x => `${x.action}:${x.rule}`), ['deny:1'], 'only the denial has a decision line')
  const m = await p.metrics.registry.getSingleMetricAsString('egress_router_acl_decisions_total')
  t.match(m, /egress_router_acl_decisions_total\{action="allow",rule="2"\} 2/, 'both allowed decisions are counted')
  t.match(m, /egress_router_acl_decisions_total\{action="deny",rule="1"\} 1/)
})

t.test('bypass: an allowed name that resolves into a denied range is denied (HTTP and CONNECT)', async t => {
  const origin = await startOrigin(t, DEST2)
  const p = await startProxy(t, 'api.example.test\n!127.0.0.4/32\n*', { zone: { 'api.example.test': [DEST2] } })
  const answer = await raw(p.port, `GET http://api.example.test:${origin.port}/ HTTP/1.1\r\nHost: api.example.test\r\nConnection: close\r\n\r\n`)
  t.equal(statusOf(answer), 403)
  t.match(answer, /denied by rule line 2 '!127\.0\.0\.4\/32' \(resolved address 127\.0\.0\.4\)/, 'the reason names the rule')
  const tunnel = await openTunnel(p.port, `api.example.test:${origin.port}`)
  t.equal(tunnel.status, 403, 'CONNECT to a denied IP via an allowed name')
  tunnel.socket.destroy()
  t.equal(origin.seen.length, 0)
  t.equal(origin.sockets.size, 0)
})

t.test('bypass: every numeric notation of a denied address is denied', async t => {
  const origin = await startOrigin(t, DEST2)
  const p = await startProxy(t, '!127.0.0.4\n*')
  // 127.0.0.4 = 0x7f000004 = 2130706436
  const spellings = ['127.0.0.4', '2130706436', '0x7f000004', '0177.0.0.04', '0x7f.0.0.4', '127.4', '127.0.4', '127.0.0.4.',
    '%31%32%37.0.0.4', '[::ffff:127.0.0.4]', '[::ffff:7f00:4]', '[0:0:0:0:0:FFFF:7F00:0004]']
  for (const host of spellings) {
    const a = await raw(p.port, `GET http://${host}:${origin.port}/ HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n`)
    t.equal(statusOf(a), 403, `GET http://${host}`)
    const c = await raw(p.port, `CONNECT ${host}:${origin.port} HTTP/1.1\r\nHost: x\r\n\r\n`)
    t.equal(statusOf(c), 403, `CONNECT ${host}`)
  }
  t.equal(origin.seen.length, 0, 'nothing reached the denied destination')
  t.equal(new Set(decisions(p.logs).map(d => d.target)).size, 1, 'all spellings were logged as the one canonical target')
})

t.test('bypass: an allowed Host header with a denied URI is denied; the URI decides', async t => {
  const origin = await startOrigin(t, DEST2)
  const allowed = await startOrigin(t, DEST)
  const p = await startProxy(t, `api.example.test\n${DEST}`, { zone: { 'api.example.test': [DEST] } })
  const a = await raw(p.port, `GET http://${DEST2}:${origin.port}/ HTTP/1.1\r\nHost: api.example.test\r\nConnection: close\r\n\r\n`)
  t.equal(statusOf(a), 403)
  t.equal(origin.seen.length, 0)
  const b = await raw(p.port, `GET http://api.example.test:${allowed.port}/ HTTP/1.1\r\nHost: ${DEST2}:${origin.port}\r\nConnection: close\r\n\r\n`)
  t.equal(statusOf(b), 200)
  t.equal(allowed.seen[0]!.headers.host, `api.example.test:${allowed.port}`, 'Host rewritten from the URI')
})

t.test('IPv6 destinations: bracketed literals, AAAA answers, source of the same family', async t => {
  const origin = await startOrigin(t, '::1')
  const p = await startProxy(t, '::1\nsix.example.test', { source: '::1', zone: { 'six.example.test': ['::1'], 'four.example.test': [DEST] } })
  const a = await raw(p.port, `GET http://[0:0::1]:${origin.port}/v6 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n`)
  t.equal(statusOf(a), 200)
  t.equal(origin.seen[0]!.headers.host, `[::1]:${origin.port}`)
  const r = await curl(['-p', '-x', p.url, `http://six.example.test:${origin.port}/t`])
  t.equal(r.stdout, 'hello from ::1 GET /t', r.stderr)
})

// ---- answers: 400 403 502 503 504 ------------------------------------------------------------

t.test('origin-form requests to the proxy itself and malformed targets are 400', async t => {
  const p = await startProxy(t, '*')
  for (const target of ['/', '*', 'http://a..b/', 'https://example.test/', 'http://u:p@example.test/', 'http://foo.123/', 'http://example.test:99999/']) {
    const a = await raw(p.port, `GET ${target} HTTP/1.1\r\nHost: x\r\n\r\n`)
    t.equal(statusOf(a), 400, target)
  }
  t.equal(statusOf(await raw(p.port, 'CONNECT example.test HTTP/1.1\r\nHost: x\r\n\r\n')), 400, 'CONNECT without a port')
  t.match(p.logs.find(l => l.msg === 'request refused'), { status: 400, outcome: 'bad-request' })
})

t.test('clients outside EGRESS_HTTP_PROXY_CLIENTS get 403', async t => {
  const origin = await startOrigin(t)
  const p = await startProxy(t, '*', { clients: [{ address: '10.0.0.0', family: 4, prefix: 8 }] })
  const a = await raw(p.port, `GET http://${DEST}:${origin.port}/ HTTP/1.1\r\nHost: x\r\n\r\n`)
  t.equal(statusOf(a), 403)
  t.match(a, /client 127\.0\.0\.1 may not use this proxy/)
  t.equal(statusOf(await raw(p.port, `CONNECT ${DEST}:${origin.port} HTTP/1.1\r\n\r\n`)), 403)
  const ok = await startProxy(t, '*', { clients: [{ address: '127.0.0.0', family: 4, prefix: 8 }] })
  t.equal(statusOf(await raw(ok.port, `GET http://${DEST}:${origin.port}/ HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n`)), 200)
})

t.test('502 when the destination refuses, 503 when the name does not resolve', async t => {
  const closed = createNetServer()
  await new Promise<void>(resolve => closed.listen(0, DEST, resolve))
  const deadPort = (closed.address() as AddressInfo).port
  await new Promise<void>(resolve => closed.close(() => resolve()))
  const p = await startProxy(t, '*', { zone: { 'flaky.test': new DnsError('ESERVFAIL', 'flaky.test', 'server failure'), 'empty.test': [] } })
  const r = await curl(['-x', p.url, '-w', '%{http_code}', '-o', '/dev/null', `http://${DEST}:${deadPort}/`])
  t.equal(r.stdout, '502')
  t.equal(statusOf(await raw(p.port, `CONNECT ${DEST}:${deadPort} HTTP/1.1\r\n\r\n`)), 502)
  for (const name of ['nxdomain.test', 'flaky.test', 'empty.test']) {
    const a = await raw(p.port, `GET http://${name}/ HTTP/1.1\r\nHost: x\r\n\r\n`)
    t.equal(statusOf(a), 503, name)
    t.equal(statusOf(await raw(p.port, `CONNECT ${name}:443 HTTP/1.1\r\n\r\n`)), 503, `CONNECT ${name}`)
  }
  const text = await raw(p.port, 'GET http://flaky.test/ HTTP/1.1\r\nHost: x\r\n\r\n')
  t.match(text, /flaky\.test does not resolve \(ESERVFAIL\)/)
  t.ok(p.logs.some(l => l.msg === 'destination does not resolve' && l.code === 'ENOTFOUND'))
})

t.test('504 when the destination does not complete the TCP handshake, or does not answer', async t => {
  // A listener that never accepts, with its accept queue filled: further SYNs are dropped.
  const py = spawn('python3', ['-c', [
    'import socket, sys, time',
    's = socket.socket(); s.bind(("127.0.0.5", 0)); s.listen(0)',
    'print(s.getsockname()[1], flush=True)',
    'sys.stdin.read()'
  ].join('\n')], { stdio: ['pipe', 'pipe', 'inherit'] })
  t.teardown(() => { py.stdin.end(); py.kill() })
  const port = await new Promise<number>((resolve, reject) => {
    py.stdout.once('data', (d: Buffer) => resolve(Number(d.toString().trim())))
    py.once('error', reject)
  })
  const fillers: Socket[] = []
  t.teardown(() => fillers.forEach(s => s.destroy()))
  for (let i = 0; i < 4; i++) { const s = connect({ host: '127.0.0.5', port }); s.on('error', () => {}); fillers.push(s) }
  await waitFor('fillers connected', () => fillers.filter(s => !s.connecting).length >= 1)

  const origin = await startOrigin(t)
  const p = await startProxy(t, '*', { limits: { connectTimeoutMs: 300, idleTimeoutMs: 1_500 } })
  const a = await raw(p.port, `GET http://127.0.0.5:${port}/ HTTP/1.1\r\nHost: x\r\n\r\n`)
  t.equal(statusOf(a), 504, 'HTTP connect timeout')
  t.match(a, /timed out/)
  t.equal(statusOf(await raw(p.port, `CONNECT 127.0.0.5:${port} HTTP/1.1\r\n\r\n`)), 504, 'CONNECT connect timeout')
  const h = await raw(p.port, `GET http://${DEST}:${origin.port}/hang HTTP/1.1\r\nHost: x\r\n\r\n`)
  t.equal(statusOf(h), 504, 'no answer within the idle timeout')
  t.ok(p.logs.some(l => l.msg === 'request refused' && l.status === 504 && l.outcome === 'timeout'))
})

t.test('a destination that resets mid-body gives the client a truncated response, and the proxy keeps serving', async t => {
  const origin = await startOrigin(t)
  const p = await startProxy(t, '*')
  const r = await curl(['-x', p.url, '-o', '/dev/null', `http://${DEST}:${origin.port}/reset-mid-body`])
  t.not(r.code, 0, 'curl sees the transfer broken off')
  const ok = await curl(['-x', p.url, `http://${DEST}:${origin.port}/after`])
  t.equal(ok.stdout, `hello from ${DEST} GET /after`)
})

t.test('clients that give up before the answer cost the destination one connection each, and every one is closed', async t => {
  const origin = await startOrigin(t)
  let connections = 0
  origin.server.on('connection', () => { connections += 1 })
  const p = await startProxy(t, '*')
  const clients = 100
  await Promise.all(Array.from({ length: clients }, async () => {
    const socket = connect(p.port, '127.0.0.1')
    socket.on('error', () => {})
    socket.write(`GET http://${DEST}:${origin.port}/hang HTTP/1.1\r\nHost: x\r\n\r\n`)
    await new Promise(resolve => setTimeout(resolve, 200))
    socket.destroy()
  }))
  await waitFor('the destination to see every upstream connection closed', () => origin.sockets.size === 0)
  // undici reconnects for an aborted request unless told not to (nodejs/undici#5845): that would be 2 per client
  t.ok(connections <= clients, `${connections} connections for ${clients} requests`)
  // and the pool still works for the next request
  const r = await curl(['-x', p.url, `http://${DEST}:${origin.port}/after`])
  t.equal(r.stdout, `hello from ${DEST} GET /after`)
})

t.test('DELETE and OPTIONS with a chunked body reach the destination chunked, body intact', async t => {
  const origin = await startOrigin(t)
  const p = await startProxy(t, '*')
  for (const method of ['DELETE', 'OPTIONS']) {
    const a = await raw(p.port, `${method} http://${DEST}:${origin.port}/ HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n3\r\nabc\r\n0\r\n\r\n`)
    t.equal(statusOf(a), 200, method)
    const seen = origin.seen.at(-1)
    t.equal(seen?.method, method)
    t.equal(seen?.headers['transfer-encoding'], 'chunked', `${method} framed as chunked upstream`)
    t.equal(seen?.body.toString(), 'abc', `${method} body intact`)
  }
})

// ---- robustness ----------------------------------------------------------------------------------

t.test('request smuggling attempts get 400 and reach nobody', async t => {
  const origin = await startOrigin(t)
  const p = await startProxy(t, '*')
  const u = `http://${DEST}:${origin.port}/`
  const attempts = [
    `POST ${u} HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\nGET / HTTP/1.1\r\nHost: x\r\n\r\n`,
    `POST ${u} HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\nContent-Length: 40\r\n\r\nabcd`,
    `POST ${u} HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: xchunked\r\n\r\n0\r\n\r\n`,
    `POST ${u} HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked, identity\r\n\r\n0\r\n\r\n`,
    `POST ${u} HTTP/1.1\r\nHost: x\r\nTransfer-Encoding : chunked\r\n\r\n0\r\n\r\n`,
    `POST ${u} HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\n Transfer-Encoding: chunked\r\n\r\nabcd`,
    `POST ${u} HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n4;\n\r\nabcd\r\n0\r\n\r\n`,
    `GET ${u} HTTP/1.1\nHost: x\r\n\r\n`,
    `POST ${u} HTTP/1.1\r\nHost: x\r\nContent-Length: -1\r\n\r\n`
  ]
  for (const a of attempts) {
    t.equal(statusOf(await raw(p.port, a)), 400, JSON.stringify(a.split('\r\n\r\n')[0]))
  }
  t.equal(origin.seen.length, 0)
  t.ok(p.logs.some(l => l.msg === 'malformed or slow request' && l.status === 400))
})

t.test('a client sending one header byte at a time is dropped at the header timeout while others are served', async t => {
  const origin = await startOrigin(t)
  const p = await startProxy(t, '*', { limits: { headersTimeoutMs: 600 } })
  const slow = connect({ host: '127.0.0.1', port: p.port })
  t.teardown(() => slow.destroy())
  slow.on('error', () => {})
  let answer = ''
  slow.on('data', d => { answer += d.toString() })
  const closed = new Promise<void>(resolve => slow.on('close', resolve))
  const request = `GET http://${DEST}:${origin.port}/slow HTTP/1.1\r\nHost: x\r\nX-Padding: ${'p'.repeat(400)}\r\n\r\n`
  let sent = 0
  let isClosed = false
  void closed.then(() => { isClosed = true })
  let served = false
  // Bounded: at most the whole request, 40 ms a byte (far longer than the timeout).
  while (!isClosed && sent < request.length - 4) {
    slow.write(request[sent++]!)
    if (sent === 5) {
      const r = await curl(['-x', p.url, `http://${DEST}:${origin.port}/fast`])
      served = r.stdout === `hello from ${DEST} GET /fast`
    }
    await new Promise(resolve => setTimeout(resolve, 40))
  }
  await within('the slow client to be dropped', closed)
  t.ok(served, 'another client was served meanwhile')
  t.ok(sent < request.length - 4, `dropped before finishing its headers (${sent} of ${request.length} bytes)`)
  t.match(answer, /^HTTP\/1\.1 408 /)
  t.equal(origin.seen.filter(s => s.url === '/slow').length, 0)
})

t.test('max concurrent connections: the next one is dropped, and admitted again once one closes', async t => {
  const origin = await startOrigin(t)
  const p = await startProxy(t, '*', { limits: { maxConnections: 2 } })
  const held = [connect({ host: '127.0.0.1', port: p.port }), connect({ host: '127.0.0.1', port: p.port })]
  t.teardown(() => held.forEach(s => s.destroy()))
  held.forEach(s => s.on('error', () => {}))
  await waitFor('two held', () => p.proxy.activeConnections() === 2)
  const third = await raw(p.port, `GET http://${DEST}:${origin.port}/ HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n`)
  t.equal(third, '', 'dropped without an answer')
  t.ok(p.logs.some(l => l.msg === 'connection dropped: too many connections'))
  held[0]!.destroy()
  await waitFor('one left', () => p.proxy.activeConnections() === 1)
  const again = await raw(p.port, `GET http://${DEST}:${origin.port}/ HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n`)
  t.equal(statusOf(again), 200)
})

t.test('open CONNECT tunnels count as connections: the bound holds while they are open, and frees as they close', async t => {
  // The tunnel's client side moves onto a socket of its own (read-buffers.ts adoptAccepted): the
  // server must still count it until the tunnel closes.
  const origin = await startOrigin(t)
  const echo = await startEcho(t)
  const p = await startProxy(t, '*', { limits: { maxConnections: 2 } })
  const tunnels = [await openTunnel(p.port, `${DEST2}:${echo.port}`), await openTunnel(p.port, `${DEST2}:${echo.port}`)]
  t.teardown(() => tunnels.forEach(x => x.socket.destroy()))
  t.same(tunnels.map(x => x.status), [200, 200])
  t.equal(p.proxy.activeConnections(), 2)
  const third = await raw(p.port, `GET http://${DEST}:${origin.port}/ HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n`)
  t.equal(third, '', 'dropped without an answer while both tunnels are open')
  const got: Buffer[] = []
  tunnels[0]!.socket.on('data', c => got.push(c))
  tunnels[0]!.socket.end('through ')
  await new Promise(resolve => tunnels[0]!.socket.once('close', resolve))
  t.equal(Buffer.concat(got).toString(), 'through bye', 'the tunnel carried its bytes and half-close')
  await waitFor('one tunnel left', () => p.proxy.activeConnections() === 1)
  const again = await raw(p.port, `GET http://${DEST}:${origin.port}/ HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n`)
  t.equal(statusOf(again), 200, 'admitted once a tunnel closed')
})

t.test('2000 clients aborting mid-response leave no sockets behind', async t => {
  const origin = await startOrigin(t)
  const p = await startProxy(t, '*')
  const request = `GET http://${DEST}:${origin.port}/slow-stream HTTP/1.1\r\nHost: x\r\n\r\n`
  const oneAbort = (): Promise<void> => new Promise(resolve => {
    const s = connect({ host: '127.0.0.1', port: p.port })
    s.on('error', () => {})
    s.once('data', () => s.destroy())
    s.on('close', () => resolve())
    s.write(request)
  })
  // warm-up, so lazily created handles (timers, the agent) are in the baseline
  await Promise.all(Array.from({ length: 20 }, oneAbort))
  await waitFor('warm-up settled', () => p.proxy.activeConnections() === 0 && origin.sockets.size === 0)
  const fdsBefore = fdCount()
  const handlesBefore = handleCount()
  for (let batch = 0; batch < 40; batch++) await Promise.all(Array.from({ length: 50 }, oneAbort))
  await waitFor('everything closed', () => p.proxy.activeConnections() === 0 && origin.sockets.size === 0 && fdCount() <= fdsBefore)
  t.equal(p.proxy.activeConnections(), 0, 'no client connections left')
  t.equal(origin.sockets.size, 0, 'no upstream connections left')
  t.ok(fdCount() <= fdsBefore, `fds ${fdsBefore} → ${fdCount()}`)
  t.ok(handleCount() <= handlesBefore, `handles ${handlesBefore} → ${handleCount()}`)
  const outcomes = await p.metrics.registry.getSingleMetricAsString('egress_router_connection_outcomes_total')
  const aborted = Number(/outcome="aborted"\} (\d+)/.exec(outcomes)?.[1] ?? 0)
  t.equal(aborted, 2020, 'every abort counted as aborted')
})

t.test('close(drain): in-flight tunnels finish, new connections are refused, stragglers are cut at the deadline', async t => {
  const echo = await startEcho(t)
  const p = await startProxy(t, '*')
  const { socket, status } = await openTunnel(p.port, `${DEST2}:${echo.port}`)
  t.equal(status, 200)
  const got: Buffer[] = []
  socket.on('data', c => got.push(c))
  const closing = p.proxy.close(60_000)
  await waitFor('listener closed', () => !p.proxy.server.listening)
  const refused = await new Promise<string>(resolve => {
    const s = connect({ host: '127.0.0.1', port: p.port })
    s.on('error', (e: NodeJS.ErrnoException) => resolve(e.code ?? ''))
    s.on('connect', () => { s.destroy(); resolve('connected') })
  })
  t.equal(refused, 'ECONNREFUSED', 'no new connections while draining')
  socket.write('still works ')
  socket.end()
  await within('close(60 s) after the tunnel finished', closing)
  t.equal(Buffer.concat(got).toString(), 'still works bye', 'the tunnel in flight finished normally')

  const p2 = await startProxy(t, '*')
  const held = await openTunnel(p2.port, `${DEST2}:${echo.port}`)
  const heldEnded = new Promise<void>(resolve => held.socket.on('end', resolve))
  held.socket.on('error', () => {})
  t.teardown(() => held.socket.destroy())
  await within('close(200)', p2.proxy.close(200))
  await within('the straggler to be closed', heldEnded)
  t.equal(p2.proxy.activeConnections(), 0, 'the straggler was closed at the deadline')
})

t.test('close(drain) lets an HTTP response in flight finish and closes idle keep-alive connections', async t => {
  const origin = await startOrigin(t)
  const p = await startProxy(t, '*')
  const s = connect({ host: '127.0.0.1', port: p.port })
  s.on('error', () => {})
  let text = ''
  s.on('data', d => { text += d.toString('latin1') })
  const closed = new Promise<void>(resolve => s.on('close', resolve))
  s.write(`GET http://${DEST}:${origin.port}/chunked HTTP/1.1\r\nHost: x\r\n\r\n`)
  await waitFor('response started', () => text.startsWith('HTTP/1.1 200'))
  await within('close(30 s) after the response', p.proxy.close(30_000))
  await within('the keep-alive connection to close', closed)
  t.match(text, /\r\n0\r\n\r\n$/, 'the chunked response ended properly before the connection closed')
})

t.test('one proxy listens on several addresses; update() swaps the ACL for new requests', async t => {
  const origin = await startOrigin(t)
  const p = await startProxy(t, `!${DEST}\n*`)
  const second = await p.proxy.listen('127.0.0.6', 0)
  const get = async (host: string, port: number): Promise<number> =>
    statusOf(await raw(port, `GET http://${DEST}:${origin.port}/ HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n`, { host }))
  t.equal(await get('127.0.0.1', p.port), 403)
  t.equal(await get('127.0.0.6', second.port), 403, 'the second address is the same proxy')
  p.proxy.update({ port: 8080, connectPorts: '*', clients: null, accessLog: true, acl: rules(DEST) })
  t.equal(await get('127.0.0.1', p.port), 200, 'new rules apply')
  t.equal(await get('127.0.0.6', second.port), 200)
  t.ok(p.logs.some(l => l.msg === 'http proxy ACL updated'))
  await within('close', p.proxy.close(1_000))
  const refused = await new Promise<string>(resolve => {
    const s = connect({ host: '127.0.0.6', port: second.port })
    s.on('error', (e: NodeJS.ErrnoException) => resolve(e.code ?? ''))
    s.on('connect', () => { s.destroy(); resolve('connected') })
  })
  t.equal(refused, 'ECONNREFUSED', 'close() closes every listener')
})

t.test('the connection bound follows the descriptor limit: two descriptors per proxied connection, 256 kept aside', async t => {
  const limits = (soft: string): string => [
    'Limit                     Soft Limit           Hard Limit           Units     ',
    'Max processes             95603                95603                processes ',
    `Max open files            ${soft}                524288               files     `,
    'Max locked memory         8388608              8388608              bytes     '
  ].join('\n')
  t.equal(softFdLimit(limits('1024')), 1024)
  t.equal(softFdLimit(limits('20000')), 20000)
  t.equal(softFdLimit(limits('unlimited')), null, 'unlimited: no number')
  t.equal(softFdLimit('Max processes 10 10 processes'), null, 'no line: no number')
  t.equal(softFdLimit(limits('1e400')), null, 'not an integer: no number')
  t.equal(maxConnectionsForFdLimit(20000), 9872, '(20000 - 256) / 2')
  t.equal(maxConnectionsForFdLimit(1048576), 524160)
  t.equal(maxConnectionsForFdLimit(1024), 1024, 'never below 1024')
  t.equal(maxConnectionsForFdLimit(null), 4096, 'unknown: 4096')
  t.equal(maxConnectionsForFdLimit(0), 4096)
  t.equal(maxConnectionsForFdLimit(Number.POSITIVE_INFINITY), 4096)
})
