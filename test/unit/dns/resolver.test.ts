import t, { type Test } from 'tap'
import { Resolver, type ResolverOptions } from '../../../src/dns/resolver.js'
import { question, RCODE, response, startFixture, type Fixture, type Handler, type Query } from './dns-fixture.js'

/** A zone: name → records; anything else NXDOMAIN. */
function zone (records: Record<string, Array<{ type: 'A' | 'AAAA' | 'CNAME', data: string, ttl?: number }>>): Handler {
  return (q, reply) => {
    const { name, type } = question(q)
    const rrs = records[name]
    if (rrs === undefined) { reply.send(response(q, [], { rcode: RCODE.NXDOMAIN })); return }
    const answers = rrs.filter(r => r.type === type || r.type === 'CNAME').map(r => ({ type: r.type, name, ttl: r.ttl ?? 60, class: 'IN' as const, data: r.data }))
    reply.send(response(q, answers))
  }
}

async function setup (t: Test, handler: Handler, opts: Partial<ResolverOptions> = {}): Promise<{ f: Fixture, r: Resolver }> {
  const f = await startFixture(handler)
  t.teardown(() => f.close())
  const r = new Resolver({ nameservers: [{ address: f.address, port: f.port }], timeoutMs: 500, attempts: 1, minTtlMs: 1000, maxTtlMs: 60_000, maxStaleMs: 60_000, ...opts })
  t.teardown(() => r.close())
  return { f, r }
}

const asked = (f: Fixture): string[] => f.queries.map((q: Query) => `${question(q).type} ${question(q).name}`).sort()

t.test('IP literals come back as themselves, canonical, without a query', async t => {
  const { f, r } = await setup(t, zone({}))
  t.same((await r.resolve('192.0.2.7')).addresses, [{ address: '192.0.2.7', family: 4 }])
  t.same((await r.resolve('[2001:DB8::0:1]')).addresses, [{ address: '2001:db8::1', family: 6 }])
  t.same(r.peek('2001:db8::1')?.addresses, [{ address: '2001:db8::1', family: 6 }])
  t.equal(f.queries.length, 0)
})

t.test('not a host name → EBADNAME, without a query', async t => {
  const { f, r } = await setup(t, zone({}))
  await t.rejects(r.resolve('bad name.test'), { code: 'EBADNAME' })
  t.throws(() => r.watch('', () => {}), { code: 'EBADNAME' })
  t.equal(f.queries.length, 0)
})

t.test('A and AAAA asked together; A first; then served from the cache', async t => {
  const { f, r } = await setup(t, zone({ 'h.test': [{ type: 'AAAA', data: '2001:db8::1' }, { type: 'A', data: '192.0.2.1' }] }))
  const first = await r.resolve('H.test')
  t.same(first.addresses, [{ address: '192.0.2.1', family: 4 }, { address: '2001:db8::1', family: 6 }])
  t.equal(first.source, 'network')
  t.equal(first.stale, false)
  t.same(asked(f), ['A h.test', 'AAAA h.test'])
  const second = await r.resolve('h.test')
  t.equal(second.source, 'cache')
  t.equal(f.queries.length, 2, 'no new query')
  t.same(r.peek('h.test')?.addresses, first.addresses)
  t.match(r.stats(), { queries: 2, answers: 2, failures: 0, cacheEntries: 1, staleEntries: 0 })
})

t.test('concurrent lookups of one name share one query', async t => {
  const { f, r } = await setup(t, zone({ 'h.test': [{ type: 'A', data: '192.0.2.1' }] }))
  const all = await Promise.all(Array.from({ length: 20 }, () => r.resolve('h.test')))
  t.equal(all.length, 20)
  t.ok(all.every(res => res.addresses[0]?.address === '192.0.2.1'))
  t.same(asked(f), ['A h.test', 'AAAA h.test'])
})

t.test('a CNAME chain that ends without the address is chased', async t => {
  const { f, r } = await setup(t, zone({
    'www.test': [{ type: 'CNAME', data: 'edge.test', ttl: 30 }],
    'edge.test': [{ type: 'A', data: '192.0.2.9', ttl: 300 }]
  }))
  const res = await r.resolve('www.test')
  t.same(res.addresses, [{ address: '192.0.2.9', family: 4 }])
  t.ok(asked(f).includes('A edge.test'))
})

t.test('a CNAME loop is a failure, not a hang', async t => {
  const { r } = await setup(t, zone({ 'a.test': [{ type: 'CNAME', data: 'b.test' }], 'b.test': [{ type: 'CNAME', data: 'a.test' }] }))
  await t.rejects(r.resolve('a.test'), { code: 'ESERVFAIL', message: /CNAME loop/ })
})

t.test('search list and ndots: an unqualified name is tried with each domain first', async t => {
  const { f, r } = await setup(t, zone({ 'api.corp.test': [{ type: 'A', data: '192.0.2.5' }] }), { search: ['ns.corp.test', 'corp.test'], ndots: 1 })
  t.same((await r.resolve('api')).addresses, [{ address: '192.0.2.5', family: 4 }])
  t.same(asked(f), ['A api.corp.test', 'A api.ns.corp.test', 'AAAA api.corp.test', 'AAAA api.ns.corp.test'])
})

t.test('NXDOMAIN → ENOTFOUND, cached for the clamped negative TTL', async t => {
  const { f, r } = await setup(t, zone({}))
  await t.rejects(r.resolve('gone.test'), { code: 'ENOTFOUND', message: /NXDOMAIN/ })
  await t.rejects(r.resolve('gone.test'), { code: 'ENOTFOUND' })
  t.equal(f.queries.length, 2, 'the second lookup did not query')
  t.equal(r.peek('gone.test'), undefined)
})

t.test('NOERROR without addresses → ENOTFOUND (no data)', async t => {
  const { r } = await setup(t, zone({ 'mx-only.test': [] }))
  await t.rejects(r.resolve('mx-only.test'), { code: 'ENOTFOUND', message: /no A or AAAA/ })
})

t.test('SERVFAIL everywhere → ESERVFAIL, remembered until the retry', async t => {
  const { f, r } = await setup(t, (q, reply) => reply.send(response(q, [], { rcode: RCODE.SERVFAIL })))
  await t.rejects(r.resolve('h.test'), { code: 'ESERVFAIL' })
  await t.rejects(r.resolve('h.test'), { code: 'ESERVFAIL' })
  t.equal(f.queries.length, 2, 'the second caller got the remembered failure')
  t.equal(r.stats().failures, 1)
})

t.test('one family failing while the other answers: the answer is used', async t => {
  const { r } = await setup(t, (q, reply) => {
    const { name, type } = question(q)
    if (type === 'AAAA') reply.send(response(q, [], { rcode: RCODE.SERVFAIL }))
    else reply.send(response(q, [{ type: 'A', name, ttl: 300, data: '192.0.2.1' }]))
  })
  const before = Date.now()
  const res = await r.resolve('h.test')
  t.same(res.addresses, [{ address: '192.0.2.1', family: 4 }])
  t.ok(res.expiresAt - before <= 1000 + (Date.now() - before), 'kept for minTtl only, so AAAA is asked again soon')
})

t.test('close() cancels lookups in flight and stops further ones', async t => {
  const { r } = await setup(t, () => {}, { timeoutMs: 30_000 })
  const pending = r.resolve('slow.test')
  r.close()
  await t.rejects(pending, { code: 'ECANCELLED' })
  await t.rejects(r.resolve('other.test'), { code: 'ECANCELLED' })
})

t.test('watch() tells the first answer and each change; unsubscribe stops it', async t => {
  let address = '192.0.2.1'
  const { r } = await setup(t, (q, reply) => {
    const { name, type } = question(q)
    reply.send(response(q, type === 'A' ? [{ type: 'A', name, ttl: 0, data: address }] : []))
  }, { minTtlMs: 200, maxTtlMs: 1000 })
  const seen: string[][] = []
  const stop = r.watch('w.test', res => seen.push(res.addresses.map(a => a.address)))
  const deadline = Date.now() + 5000
  while (seen.length < 1 && Date.now() < deadline) await new Promise(resolve => setTimeout(resolve, 10))
  t.same(seen, [['192.0.2.1']])
  address = '192.0.2.2'
  while (seen.length < 2 && Date.now() < deadline) await new Promise(resolve => setTimeout(resolve, 10))
  t.same(seen, [['192.0.2.1'], ['192.0.2.2']], 'refreshed in the background, change told')
  const res = await r.resolve('w.test')
  t.equal(res.source, 'cache')
  stop()
})
