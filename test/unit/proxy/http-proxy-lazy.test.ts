/**
 * undici is loaded for the first plain-HTTP request only: a proxy that carries only CONNECT tunnels
 * (HTTPS egress) never loads it, and then only its dispatchers (src/proxy/undici-core.ts), not its index with
 * fetch, WebSocket and the mock agents. Its own file, so that no other test has loaded undici into this process.
 */
import t from 'tap'
import { createRequire } from 'node:module'
import { connect, createServer as createNetServer, type AddressInfo } from 'node:net'
import { createServer as createHttpServer } from 'node:http'
import pino from 'pino'
import { createHttpProxyServer } from '../../../src/proxy/http-proxy.js'
import { createMetrics } from '../../../src/observe/metrics.js'
import { aclRules } from '../../helpers/acl.js'

const loaded = (part: string): boolean => Object.keys(createRequire(import.meta.url).cache).some(k => k.includes(`/node_modules/undici/${part}`))
const undiciLoaded = (): boolean => loaded('')

/** Sends `text` on a new connection to the proxy and resolves with the first chunk of the answer. */
function exchange (port: number, text: string): Promise<{ first: string, socket: ReturnType<typeof connect> }> {
  return new Promise((resolve, reject) => {
    const socket = connect({ host: '127.0.0.1', port })
    socket.once('error', reject)
    socket.once('data', (d: Buffer) => { resolve({ first: d.toString('latin1'), socket }) })
    socket.write(text)
  })
}

t.test('a proxy that only tunnels never loads undici; the first plain request loads it and is served', async t => {
  t.notOk(undiciLoaded(), 'undici not loaded before the proxy exists')
  const echo = createNetServer(s => { s.on('data', d => s.write(d)); s.on('error', () => {}) })
  await new Promise<void>(resolve => echo.listen(0, '127.0.0.1', resolve))
  const origin = createHttpServer((_req, res) => { res.end('hello') })
  await new Promise<void>(resolve => origin.listen(0, '127.0.0.1', resolve))
  t.teardown(() => { echo.close(); origin.close() })
  const echoPort = (echo.address() as AddressInfo).port
  const originPort = (origin.address() as AddressInfo).port

  const proxy = createHttpProxyServer({
    config: { port: 8080, connectPorts: '*', clients: null, accessLog: true, acl: aclRules('127.0.0.1') },
    sourceAddress: '127.0.0.1',
    resolver: { resolve: async () => { throw new Error('no names here') } } as never,
    logger: pino({ level: 'silent' }),
    metrics: createMetrics({ defaultMetrics: false })
  })
  t.teardown(() => proxy.close(0))
  const { port } = await proxy.listen('127.0.0.1', 0)

  const tunnel = await exchange(port, `CONNECT 127.0.0.1:${echoPort} HTTP/1.1\r\nHost: 127.0.0.1:${echoPort}\r\n\r\n`)
  t.match(tunnel.first, /^HTTP\/1\.1 200 /, 'tunnel established')
  const echoed = new Promise<string>(resolve => tunnel.socket.once('data', (d: Buffer) => resolve(d.toString())))
  tunnel.socket.write('ping')
  t.equal(await echoed, 'ping', 'and carries bytes')
  tunnel.socket.destroy()
  t.notOk(undiciLoaded(), 'a tunnel does not load undici')

  const plain = await exchange(port, `GET http://127.0.0.1:${originPort}/ HTTP/1.1\r\nHost: 127.0.0.1:${originPort}\r\nConnection: close\r\n\r\n`)
  plain.socket.destroy()
  t.match(plain.first, /^HTTP\/1\.1 200 /, 'the first plain request is served')
  t.ok(undiciLoaded(), 'and has loaded undici')
  t.ok(loaded('lib/dispatcher/agent.js'), 'its Agent')
  t.notOk(loaded('index.js'), 'not its index')
  t.notOk(loaded('lib/web/'), 'nor fetch, WebSocket, EventSource')
  t.notOk(loaded('lib/mock/'), 'nor the mock agents')
})
