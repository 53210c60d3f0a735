import t from 'tap'
import { parseResolvConf } from '../../../src/dns/resolv-conf.js'

t.test('a Kubernetes pod resolv.conf', async t => {
  const conf = parseResolvConf([
    'search default.svc.cluster.local svc.cluster.local cluster.local',
    'nameserver 10.96.0.10',
    'options ndots:5'
  ].join('\n'))
  t.same(conf.nameservers, [{ address: '10.96.0.10', port: 53 }])
  t.same(conf.search, ['default.svc.cluster.local', 'svc.cluster.local', 'cluster.local'])
  t.equal(conf.ndots, 5)
  t.equal(conf.timeoutMs, 5000)
  t.equal(conf.attempts, 2)
  t.equal(conf.rotate, false)
  t.equal(conf.defaulted, false)
  t.same(conf.skipped, [])
})

t.test('defaults as glibc: ndots 1, timeout 5 s, attempts 2, no search', async t => {
  const conf = parseResolvConf('nameserver 192.0.2.53\n')
  t.match(conf, { ndots: 1, timeoutMs: 5000, attempts: 2, rotate: false, search: [] })
})

t.test('no usable nameserver → 127.0.0.1:53, flagged as defaulted', async t => {
  for (const text of ['', '# nothing\n', 'nameserver bogus\n', 'search example.test\n']) {
    const conf = parseResolvConf(text)
    t.same(conf.nameservers, [{ address: '127.0.0.1', port: 53 }], JSON.stringify(text))
    t.equal(conf.defaulted, true)
  }
})

t.test('IPv6 nameservers, with scope, lower-cased; at most three kept', async t => {
  const conf = parseResolvConf([
    'nameserver 2001:DB8::53',
    'nameserver fe80::1%eth0',
    'nameserver 192.0.2.1',
    'nameserver 192.0.2.2'
  ].join('\n'))
  t.same(conf.nameservers.map(n => n.address), ['2001:db8::53', 'fe80::1%eth0', '192.0.2.1'])
  t.equal(conf.skipped.length, 1)
  t.match(conf.skipped[0], /line 4: 'nameserver 192.0.2.2': only the first 3 nameservers are used/)
})

t.test('invalid nameserver lines are skipped with a reason', async t => {
  const conf = parseResolvConf('nameserver 300.1.1.1\nnameserver\nnameserver 192.0.2.1 # office\nnameserver 1.2.3\n')
  t.same(conf.nameservers.map(n => n.address), ['192.0.2.1'])
  t.equal(conf.skipped.length, 3)
  t.match(conf.skipped[0], /line 1: 'nameserver 300.1.1.1': not an IP address/)
})

t.test('comments: # and ; at the start of a line, and after arguments', async t => {
  const conf = parseResolvConf('# nameserver 192.0.2.9\n; nameserver 192.0.2.8\nnameserver 192.0.2.1 ; trailing\nsearch a.test # b.test\n')
  t.same(conf.nameservers.map(n => n.address), ['192.0.2.1'])
  t.same(conf.search, ['a.test'])
})

t.test('keywords count only at the start of a line', async t => {
  const conf = parseResolvConf('  nameserver 192.0.2.9\nnameserver 192.0.2.1\n')
  t.same(conf.nameservers.map(n => n.address), ['192.0.2.1'])
})

t.test('domain and search: the last one wins; trailing dots and case dropped', async t => {
  t.same(parseResolvConf('domain Corp.Test.\nsearch a.test b.test\n').search, ['a.test', 'b.test'])
  t.same(parseResolvConf('search a.test b.test\ndomain corp.test\n').search, ['corp.test'])
  t.same(parseResolvConf('search .\n').search, [])
  t.same(parseResolvConf('search\ta.test\t b.test\n').search, ['a.test', 'b.test'])
})

t.test('options: values capped like glibc, zeros raised to one, unknown ignored, several lines add up', async t => {
  const conf = parseResolvConf('nameserver 192.0.2.1\noptions ndots:20 timeout:99 edns0\noptions attempts:9 rotate single-request\n')
  t.match(conf, { ndots: 15, timeoutMs: 30_000, attempts: 5, rotate: true })
  t.match(parseResolvConf('options timeout:0 attempts:0 ndots:0\n'), { timeoutMs: 1000, attempts: 1, ndots: 0 })
  t.match(parseResolvConf('options timeout:x ndots:-1 rotate:1\n'), { timeoutMs: 5000, ndots: 1, rotate: false })
})

t.test('CRLF line endings', async t => {
  const conf = parseResolvConf('nameserver 192.0.2.1\r\nsearch a.test\r\n')
  t.same(conf.nameservers.map(n => n.address), ['192.0.2.1'])
  t.same(conf.search, ['a.test'])
})
