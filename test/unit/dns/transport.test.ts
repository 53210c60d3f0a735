import t, { type Test } from 'tap'
import { createSocket } from 'node:dgram'
import { Transport } from '../../../src/dns/transport.js'
import { DnsError } from '../../../src/errors.js'
import { question, RCODE, response, startFixture, waitFor, type Fixture, type Handler } from './dns-fixture.js'

const data = (rr: unknown): unknown => (rr as { data: unknown }).data
const A = (name: string, data: string, ttl = 60) => ({ type: 'A' as const, name, ttl, class: 'IN' as const, data })

async function fixture (t: Test, handler: Handler, address?: string): Promise<Fixture> {
  const f = await startFixture(handler, address)
  t.teardown(() => f.close())
  return f
}

function transport (t: Test, servers: Fixture[] | { address: string, port: number }[], opts: Partial<ConstructorParameters<typeof Transport>[0]> = {}): Transport {
  const tr = new Transport({ nameservers: servers.map(s => ({ address: s.address, port: s.port })), timeoutMs: 300, attempts: 2, rotate: false, ...opts })
  t.teardown(() => tr.close())
  return tr
}

/** A free UDP port on loopback where nothing listens (bound, read, closed). */
async function deadPort (): Promise<number> {
  const s = createSocket('udp4')
  await new Promise<void>(resolve => s.bind(0, '127.0.0.1', () => resolve()))
  const port = s.address().port
  await new Promise<void>(resolve => s.close(() => resolve()))
  return port
}

t.test('an A query is answered over UDP with a random ID and the question echoed', async t => {
  const f = await fixture(t, (q, reply) => reply.send(response(q, [A(question(q).name, '192.0.2.10')])))
  const tr = transport(t, [f])
  const answer = await tr.query('host.test', 'A')
  t.equal(answer.rcode, 'NOERROR')
  t.same(answer.answers.map(data), ['192.0.2.10'])
  t.equal(answer.tcp, false)
  t.same(answer.server, { address: '127.0.0.1', port: f.port })
  t.equal(f.queries.length, 1)
  t.equal(f.queries[0]?.flag_rd, true, 'recursion desired')
  t.equal(tr.idsInFlight, 0, 'the ID is released once answered')
})

t.test('each query comes from a fresh source port', async t => {
  const ports = new Set<number>()
  const raw = createSocket('udp4')
  await new Promise<void>(resolve => raw.bind(0, '127.0.0.1', () => resolve()))
  t.teardown(() => raw.close())
  raw.on('message', (_buf, rinfo) => { ports.add(rinfo.port) })
  const tr = transport(t, [{ address: '127.0.0.1', port: raw.address().port }], { timeoutMs: 50, attempts: 1 })
  for (let i = 0; i < 5; i++) await t.rejects(tr.query('x.test', 'A'), { code: 'ETIMEOUT' })
  t.equal(ports.size, 5, 'five queries, five source ports')
})

t.test('answers with a wrong ID, question, type, or from another port are ignored', async t => {
  const f = await fixture(t, (q, reply) => {
    const { name } = question(q)
    const good = response(q, [A(name, '192.0.2.10')])
    reply.send({ ...good, id: ((q.id ?? 0) + 1) & 0xffff, answers: [A(name, '203.0.113.66')] })
    reply.send({ ...good, questions: [{ type: 'A', class: 'IN', name: 'other.test' }], answers: [A('other.test', '203.0.113.67')] })
    reply.send({ ...good, questions: [{ type: 'AAAA', class: 'IN', name }], answers: [A(name, '203.0.113.68')] })
    reply.send(Buffer.from('not dns'))
    reply.sendFromOtherPort({ ...good, answers: [A(name, '203.0.113.69')] })
    // the real answer comes last, a little later than the spoofs
    setTimeout(() => reply.send(good), 50)
  })
  const tr = transport(t, [f], { timeoutMs: 2000 })
  const answer = await tr.query('Host.Test', 'A')
  t.same(answer.answers.map(data), ['192.0.2.10'], 'only the matching answer is taken')
  t.ok(tr.stats.mismatched >= 4, `mismatched counted (${tr.stats.mismatched}); the other-port one is dropped by the kernel`)
  t.equal(tr.stats.answers, 1)
})

t.test('the question name matches case-insensitively (0x20 echo)', async t => {
  const f = await fixture(t, (q, reply) => {
    const r = response(q, [A('HOST.TEST', '192.0.2.10')])
    reply.send({ ...r, questions: [{ type: 'A', class: 'IN', name: 'HoSt.TeSt' }] })
  })
  const tr = transport(t, [f])
  t.equal((await tr.query('host.test', 'A')).rcode, 'NOERROR')
})

t.test('a truncated UDP answer is asked again over TCP of the same server', async t => {
  const many = Array.from({ length: 60 }, (_, i) => `198.51.100.${i + 1}`)
  const f = await fixture(t, (q, reply) => {
    const { name } = question(q)
    if (reply.tcp) reply.send(response(q, many.map(ip => A(name, ip))))
    else reply.send(response(q, [], { tc: true }))
  })
  const tr = transport(t, [f])
  const answer = await tr.query('big.test', 'A')
  t.equal(answer.tcp, true)
  t.equal(answer.answers.length, 60)
  t.equal(tr.stats.truncated, 1)
  t.same(f.queries.length, 2, 'one UDP, one TCP')
})

t.test('a TCP answer with the wrong ID is ignored too', async t => {
  const f = await fixture(t, (q, reply) => {
    const { name } = question(q)
    if (!reply.tcp) { reply.send(response(q, [], { tc: true })); return }
    reply.send({ ...response(q, [A(name, '203.0.113.66')]), id: ((q.id ?? 0) + 1) & 0xffff })
    reply.send(response(q, [A(name, '192.0.2.10')]))
  })
  const tr = transport(t, [f])
  const answer = await tr.query('big.test', 'A')
  t.same(answer.answers.map(data), ['192.0.2.10'])
  t.equal(tr.stats.mismatched, 1)
})

t.test('SERVFAIL and REFUSED move on to the next server; NXDOMAIN is final', async t => {
  const servfail = await fixture(t, (q, reply) => reply.send(response(q, [], { rcode: RCODE.SERVFAIL })))
  const refused = await fixture(t, (q, reply) => reply.send(response(q, [], { rcode: RCODE.REFUSED })))
  const nx = await fixture(t, (q, reply) => reply.send(response(q, [], { rcode: RCODE.NXDOMAIN })))
  const tr = transport(t, [servfail, refused, nx])
  const answer = await tr.query('gone.test', 'A')
  t.equal(answer.rcode, 'NXDOMAIN')
  t.equal(answer.server.port, nx.port)
  t.equal(servfail.queries.length, 1)
  t.equal(refused.queries.length, 1)

  const tr2 = transport(t, [servfail, refused])
  const error = await tr2.query('gone.test', 'A').catch((e: unknown) => e)
  t.type(error, DnsError)
  t.equal((error as DnsError).code, 'ESERVFAIL')
  t.match((error as DnsError).message, /SERVFAIL.*REFUSED.*SERVFAIL.*REFUSED/, 'two attempts over both servers, each named')
})

t.test('a silent server times out each try; attempts × servers tries, then ETIMEOUT', async t => {
  const silent1 = await fixture(t, () => {})
  const silent2 = await fixture(t, () => {})
  const tr = transport(t, [silent1, silent2], { timeoutMs: 100, attempts: 3 })
  await t.rejects(tr.query('slow.test', 'A'), { code: 'ETIMEOUT', message: /timed out/ })
  t.equal(silent1.queries.length, 3)
  t.equal(silent2.queries.length, 3)
  t.equal(tr.idsInFlight, 0)
})

t.test('a closed port (ICMP unreachable) fails that try at once and the next server answers', async t => {
  const port = await deadPort()
  const f = await fixture(t, (q, reply) => reply.send(response(q, [A(question(q).name, '192.0.2.10')])))
  // A long timeout: if ECONNREFUSED were not noticed the test would hit tap's timeout, not pass.
  const tr = transport(t, [{ address: '127.0.0.1', port }, f], { timeoutMs: 60_000 })
  const answer = await tr.query('host.test', 'A')
  t.equal(answer.server.port, f.port)
})

t.test('rotate starts each query at the next server', async t => {
  const handler: Handler = (q, reply) => reply.send(response(q, [A(question(q).name, '192.0.2.10')]))
  const f1 = await fixture(t, handler)
  const f2 = await fixture(t, handler)
  const rotating = transport(t, [f1, f2], { rotate: true })
  const used = []
  for (let i = 0; i < 4; i++) used.push((await rotating.query('r.test', 'A')).server.port)
  t.same(used, [f1.port, f2.port, f1.port, f2.port])
  const fixed = transport(t, [f1, f2])
  for (let i = 0; i < 2; i++) t.equal((await fixed.query('r.test', 'A')).server.port, f1.port)
})

t.test('IPv6 nameservers work', async t => {
  const f = await fixture(t, (q, reply) => reply.send(response(q, [{ type: 'AAAA', name: question(q).name, ttl: 60, data: '2001:db8::10' }])), '::1')
  const tr = transport(t, [f])
  const answer = await tr.query('v6.test', 'AAAA')
  t.same(answer.answers.map(data), ['2001:db8::10'])
})

t.test('no ID is handed out twice while in flight, even when the random source repeats', async t => {
  const silent = await fixture(t, () => {})
  const tr = transport(t, [silent], { timeoutMs: 5000, attempts: 1, randomId: () => 7 })
  const pending = Array.from({ length: 20 }, (_, i) => tr.query(`n${i}.test`, 'A').catch((e: unknown) => e))
  t.ok(await waitFor(() => silent.queries.length === 20), 'all 20 queries reached the server')
  const ids = silent.queries.map(q => q.id)
  t.equal(new Set(ids).size, 20, 'twenty distinct IDs')
  t.ok(ids.includes(7), 'the drawn ID is used when free')
  tr.close()
  for (const p of pending) t.match(await p, { code: 'ECANCELLED' })
  t.equal(tr.idsInFlight, 0)
})

t.test('1000 concurrent queries with crypto-random IDs: all distinct in flight', async t => {
  // Without the in-flight check, 1000 draws from 65536 collide with probability 1 - e^-7.6 ≈ 99.95 %.
  const silent = await fixture(t, () => {})
  const tr = transport(t, [silent], { timeoutMs: 10_000, attempts: 1 })
  // Started in batches of 100, each reaching the server before the next: a burst of 1000
  // datagrams would overflow the fixture's receive buffer and prove nothing.
  const pending: Array<Promise<unknown>> = []
  for (let batch = 0; batch < 10; batch++) {
    for (let i = 0; i < 100; i++) pending.push(tr.query(`n${batch}-${i}.test`, 'A').catch((e: unknown) => e))
    t.ok(await waitFor(() => silent.queries.length === (batch + 1) * 100, 5000), `batch ${batch} reached the server`)
  }
  t.equal(new Set(silent.queries.map(q => q.id)).size, 1000)
  t.equal(tr.idsInFlight, 1000)
  tr.close()
  await Promise.all(pending)
  t.equal(tr.idsInFlight, 0)
})

t.test('no nameserver configured → ENONAMESERVER', async t => {
  const tr = transport(t, [])
  await t.rejects(tr.query('x.test', 'A'), { code: 'ENONAMESERVER' })
})
