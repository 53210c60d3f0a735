import t from 'tap'
import { nameProblem, searchCandidates } from '../../../src/dns/names.js'

t.test('valid host names', async t => {
  for (const name of ['a', 'example.com', 'example.com.', 'x-1.y_2.test', '_sip._tcp.example.test', `${'a'.repeat(63)}.test`]) {
    t.equal(nameProblem(name), null, name)
  }
})

t.test('invalid host names say why', async t => {
  t.match(nameProblem(''), /empty host name/)
  t.match(nameProblem('.'), /empty host name/)
  t.match(nameProblem('a..b'), /empty label/)
  t.match(nameProblem(`${'a'.repeat(64)}.test`), /longer than 63/)
  t.match(nameProblem(`${'a.'.repeat(127)}ab`), /longer than 253/)
  t.match(nameProblem('bad name.test'), /'bad name' has characters/)
  t.match(nameProblem('-lead.test'), /'-lead'/)
  t.match(nameProblem('tést.test'), /characters/)
})

t.test('search list and ndots as glibc res_search', async t => {
  const search = ['ns.svc.cluster.local', 'cluster.local']
  t.same(searchCandidates('api', search, 1), ['api.ns.svc.cluster.local', 'api.cluster.local', 'api'], 'fewer dots than ndots: search first')
  t.same(searchCandidates('api.example', search, 1), ['api.example', 'api.example.ns.svc.cluster.local', 'api.example.cluster.local'], 'enough dots: as-is first')
  t.same(searchCandidates('api.example', search, 5), ['api.example.ns.svc.cluster.local', 'api.example.cluster.local', 'api.example'], 'ndots 5')
  t.same(searchCandidates('api.example.', search, 5), ['api.example'], 'absolute: only itself')
  t.same(searchCandidates('api', [], 1), ['api'])
  const long = 'a'.repeat(60) + '.' + 'b'.repeat(60) + '.' + 'c'.repeat(60)
  t.same(searchCandidates(long, ['d'.repeat(63) + '.' + 'e'.repeat(20) + '.test'], 1), [long], 'candidates over 253 characters are left out')
})
