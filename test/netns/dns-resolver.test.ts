/**
 * The resolver against a real DNS server: dnsmasq, started by each test on 127.0.0.1 with a free
 * port and its own hosts file, killed on teardown. Loopback only; no root needed.
 */
import t, { type Test } from 'tap'
import { spawn, type ChildProcess } from 'node:child_process'
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs'
import { createServer } from 'node:net'
import { createSocket } from 'node:dgram'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { Resolver, type ResolverOptions } from '../../src/dns/resolver.js'
import { Transport } from '../../src/dns/transport.js'

interface Dnsmasq {
  port: number
  /** rewrite the hosts file and SIGHUP dnsmasq so it re-reads it */
  setHosts: (text: string) => void
  kill: () => Promise<void>
}

async function freePort (): Promise<number> {
  const udp = createSocket('udp4')
  await new Promise<void>(resolve => udp.bind(0, '127.0.0.1', () => resolve()))
  const port = udp.address().port
  const tcp = createServer()
  const ok = await new Promise<boolean>(resolve => { tcp.once('error', () => resolve(false)); tcp.listen(port, '127.0.0.1', () => resolve(true)) })
  await new Promise<void>(resolve => udp.close(() => resolve()))
  if (ok) await new Promise<void>(resolve => tcp.close(() => resolve()))
  return ok ? port : 0
}

async function startDnsmasq (t: Test, hosts: string, ttlSec: number, extra: string[] = []): Promise<Dnsmasq> {
  const dir = mkdtempSync(join(tmpdir(), 'erdns-'))
  t.teardown(() => rmSync(dir, { recursive: true, force: true }))
  const hostsFile = join(dir, 'hosts')
  writeFileSync(hostsFile, hosts)
  for (let tries = 0; tries < 5; tries++) {
    const port = await freePort()
    if (port === 0) continue
    const args = [
      '--no-daemon', '--conf-file=/dev/null', `--port=${port}`, '--listen-address=127.0.0.1', '--bind-interfaces',
      '--no-resolv', '--no-hosts', `--addn-hosts=${hostsFile}`, `--local-ttl=${ttlSec}`, '--local=/test/',
      '--pid-file=', '--log-queries', '--log-facility=-', ...(process.getuid?.() === 0 ? ['--user=root'] : []), ...extra
    ]
    const child: ChildProcess = spawn('dnsmasq', args, { stdio: ['ignore', 'ignore', 'pipe'] })
    let exited = false
    const exit = new Promise<void>(resolve => child.once('exit', () => { exited = true; resolve() }))
    let stderr = ''
    child.stderr?.on('data', (chunk: Buffer) => { stderr += chunk.toString() })
    const kill = async (): Promise<void> => { if (!exited) { child.kill('SIGTERM'); await exit } }
    t.teardown(kill)
    // Ready once it answers a query (deadline 5 s).
    const probe = new Transport({ nameservers: [{ address: '127.0.0.1', port }], timeoutMs: 200, attempts: 1, rotate: false })
    const deadline = Date.now() + 5000
    let ready = false
    while (!ready && !exited && Date.now() < deadline) {
      ready = await probe.query('probe.test', 'A').then(() => true, () => false)
      if (!ready) await new Promise(resolve => setTimeout(resolve, 20))
    }
    probe.close()
    if (ready) {
      return {
        port,
        setHosts: text => { writeFileSync(hostsFile, text); child.kill('SIGHUP') },
        kill
      }
    }
    await kill()
    if (!/Address already in use/.test(stderr)) throw new Error(`dnsmasq did not start: ${stderr}`)
  }
  throw new Error('dnsmasq: no free port after 5 tries')
}

interface LogLine { level: string, msg: string | undefined, [key: string]: unknown }
function capture (): { logger: NonNullable<ResolverOptions['logger']>, lines: LogLine[] } {
  const lines: LogLine[] = []
  const at = (level: string) => (obj: object, msg?: string) => { lines.push({ ...obj, level, msg }) }
  return { logger: { debug: () => {}, info: at('info'), warn: at('warn') }, lines }
}

function resolver (t: Test, dns: Dnsmasq, opts: Partial<ResolverOptions> = {}): Resolver {
  const r = new Resolver({ nameservers: [{ address: '127.0.0.1', port: dns.port }], timeoutMs: 300, attempts: 1, minTtlMs: 200, maxTtlMs: 60_000, maxStaleMs: 60_000, ...opts })
  t.teardown(() => r.close())
  return r
}

async function until (condition: () => boolean, ms = 10_000): Promise<boolean> {
  const deadline = Date.now() + ms
  while (!condition() && Date.now() < deadline) await new Promise(resolve => setTimeout(resolve, 10))
  return condition()
}

const HOSTS = '192.0.2.1 h.test\n2001:db8::1 h.test\n'

t.test('A and AAAA from dnsmasq, and a CNAME to them', async t => {
  const dns = await startDnsmasq(t, HOSTS, 60, ['--cname=alias.test,h.test'])
  const r = resolver(t, dns)
  const expected = [{ address: '192.0.2.1', family: 4 }, { address: '2001:db8::1', family: 6 }]
  t.same((await r.resolve('h.test')).addresses, expected)
  t.same((await r.resolve('alias.test')).addresses, expected)
  await t.rejects(r.resolve('nx.test'), { code: 'ENOTFOUND' })
})

t.test('the record TTL is respected, and clamped to [minTtl, maxTtl]', async t => {
  for (const [ttl, opts, expected] of [
    [5, { minTtlMs: 200, maxTtlMs: 60_000 }, 5000],
    [0, { minTtlMs: 700, maxTtlMs: 60_000 }, 700],
    [3600, { minTtlMs: 200, maxTtlMs: 2500 }, 2500]
  ] as const) {
    const dns = await startDnsmasq(t, HOSTS, ttl)
    let clock = 1_000_000
    const r = resolver(t, dns, { ...opts, now: () => clock })
    const res = await r.resolve('h.test')
    t.equal(res.expiresAt - clock, expected, `TTL ${ttl} s → ${expected} ms`)
    clock += expected - 1
    t.equal((await r.resolve('h.test')).source, 'cache', 'still fresh just before expiry')
    await dns.kill()
  }
})

t.test('a changed record reaches a watched name in the background: no lookup ever waits', async t => {
  const dns = await startDnsmasq(t, HOSTS, 1)
  const r = resolver(t, dns, { minTtlMs: 200, maxTtlMs: 1000 })
  const changes: string[][] = []
  const stop = r.watch('h.test', res => changes.push(res.addresses.map(a => a.address)))
  t.teardown(stop)
  t.ok(await until(() => changes.length === 1), 'first answer told')
  t.equal((await r.resolve('h.test')).source, 'cache')
  dns.setHosts('192.0.2.2 h.test\n2001:db8::1 h.test\n')
  const sources = new Set<string>()
  const seen = await until(() => changes.length >= 2, 10_000)
  t.ok(seen, 'the change was told')
  // Meanwhile, and after, every lookup is answered from the cache.
  for (let i = 0; i < 20; i++) sources.add((await r.resolve('h.test')).source)
  t.same([...sources], ['cache'])
  t.same(changes.at(-1), ['192.0.2.2', '2001:db8::1'])
  t.same((await r.resolve('h.test')).addresses.map(a => a.address), ['192.0.2.2', '2001:db8::1'])
})

t.test('dnsmasq gone: the last good answer is served stale, failures are counted and logged once', async t => {
  const dns = await startDnsmasq(t, HOSTS, 1)
  const { logger, lines } = capture()
  const r = resolver(t, dns, { minTtlMs: 200, maxTtlMs: 1000, logger })
  const changes: Array<{ stale: boolean }> = []
  t.teardown(r.watch('h.test', res => changes.push({ stale: res.stale })))
  t.ok(await until(() => changes.length === 1))
  await dns.kill()
  t.ok(await until(() => r.stats().staleEntries === 1 && r.stats().failures >= 2), 'stale, and retried')
  const res = await r.resolve('h.test')
  t.match(res, { stale: true, source: 'cache' })
  t.same(res.addresses.map(a => a.address), ['192.0.2.1', '2001:db8::1'])
  t.ok(await until(() => changes.some(c => c.stale)), 'watchers hear that it went stale')
  const warned = lines.filter(l => l.msg === 'dns lookup failed; serving the last good answer')
  t.equal(warned.length, 1, 'one warning per outage, not one per retry')
  t.match(warned[0], { host: 'h.test', serving: ['192.0.2.1', '2001:db8::1'] })
})

t.test('NXDOMAIN does not drop a working set at once: held until confirmed, then told', async t => {
  const dns = await startDnsmasq(t, HOSTS, 1)
  const { logger, lines } = capture()
  const r = resolver(t, dns, { minTtlMs: 200, maxTtlMs: 1000, logger, policy: { negativeConfirmations: 3, negativeHoldMs: 500 } })
  const changes: string[][] = []
  t.teardown(r.watch('h.test', res => changes.push(res.addresses.map(a => a.address))))
  t.ok(await until(() => changes.length === 1))
  dns.setHosts('192.0.2.9 other.test\n')
  t.ok(await until(() => lines.some(l => l.msg?.startsWith('dns name answered negatively') === true)), 'a hold started')
  const during = await r.resolve('h.test')
  t.same(during.addresses.map(a => a.address), ['192.0.2.1', '2001:db8::1'], 'the held set is still served')
  t.ok(await until(() => changes.some(c => c.length === 0), 15_000), 'the drop is told')
  t.ok(changes.slice(0, -1).every(c => c.length === 2), 'until then, watchers only ever heard the good set (maybe stale)')
  t.same(changes.at(-1), [], 'empty: the name is gone')
  const holds = lines.filter(l => l.msg?.startsWith('dns name answered negatively') === true).map(l => l.seen)
  t.same(holds.slice(0, 2), [1, 2], 'two negative answers were held before the third could confirm')
  t.ok(lines.some(l => l.msg === 'dns name confirmed gone; dropping its addresses'))
  await t.rejects(r.resolve('h.test'), { code: 'ENOTFOUND' })
})

t.test('an answer too big for 512 bytes is fetched over TCP', async t => {
  const many = Array.from({ length: 40 }, (_, i) => `198.51.100.${i + 1} big.test`).join('\n') + '\n'
  const dns = await startDnsmasq(t, many, 60)
  const r = resolver(t, dns)
  const res = await r.resolve('big.test')
  t.equal(res.addresses.length, 40)
  t.equal(r.stats().queries, 3, 'A over UDP (truncated), A over TCP, AAAA over UDP')
})
