import t from 'tap'
import type { Answer } from 'dns-packet'
import { followChain, negativeTtlSec } from '../../../src/dns/answer.js'

const A = (name: string, data: string, ttl = 60): Answer => ({ type: 'A', name, ttl, class: 'IN', data })
const AAAA = (name: string, data: string, ttl = 60): Answer => ({ type: 'AAAA', name, ttl, class: 'IN', data })
const CNAME = (name: string, data: string, ttl = 60): Answer => ({ type: 'CNAME', name, ttl, class: 'IN', data })

t.test('plain A records; the TTL is the smallest', async t => {
  const r = followChain('h.test', 'A', [A('h.test', '192.0.2.1', 30), A('H.TEST', '192.0.2.2', 20)])
  t.same(r.addresses, [{ address: '192.0.2.1', family: 4 }, { address: '192.0.2.2', family: 4 }])
  t.equal(r.ttlSec, 20)
  t.equal(r.end, 'h.test')
})

t.test('a CNAME chain is followed in the answer; TTL counts the CNAMEs too', async t => {
  const r = followChain('www.test', 'AAAA', [
    CNAME('www.test', 'edge.test', 10), CNAME('edge.test', 'node.test', 300), AAAA('node.test', '2001:DB8::1', 120)
  ])
  t.same(r.addresses, [{ address: '2001:db8::1', family: 6 }])
  t.equal(r.ttlSec, 10)
  t.equal(r.end, 'node.test')
})

t.test('records off the chain are ignored', async t => {
  const r = followChain('www.test', 'A', [A('evil.test', '203.0.113.1'), CNAME('www.test', 'node.test'), A('other.test', '203.0.113.2')])
  t.same(r.addresses, [])
  t.equal(r.end, 'node.test', 'the chain ends without addresses: the resolver chases node.test')
  t.equal(r.loop, false)
})

t.test('a record of the wrong family or type is ignored', async t => {
  t.same(followChain('h.test', 'A', [AAAA('h.test', '2001:db8::1')]).addresses, [])
  t.same(followChain('h.test', 'AAAA', [{ type: 'AAAA', name: 'h.test', ttl: 5, data: '192.0.2.1' }]).addresses, [])
})

t.test('a CNAME loop is reported', async t => {
  const r = followChain('a.test', 'A', [CNAME('a.test', 'b.test'), CNAME('b.test', 'a.test')])
  t.equal(r.loop, true)
})

t.test('negative TTL from the SOA: min(ttl, minimum); 0 without one', async t => {
  const soa = (ttl: number, minimum: number): Answer => ({
    type: 'SOA', name: 'test', ttl, data: { mname: 'ns.test', rname: 'h.test', serial: 1, refresh: 1, retry: 1, expire: 1, minimum }
  })
  t.equal(negativeTtlSec([soa(300, 60)]), 60)
  t.equal(negativeTtlSec([soa(30, 60)]), 30)
  t.equal(negativeTtlSec([]), 0)
})
