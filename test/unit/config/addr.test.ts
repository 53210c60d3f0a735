import t from 'tap'
import fc from 'fast-check'
import {
  addressBytes, cidrContains, isMulticast, isUnspecified, networkAddress, parseCidr, parseHostname, parseIp, parseMac,
  parsePort, withPort
} from '../../../src/config/addr.js'

t.test('parseIp canonicalises IPv4 and IPv6 like inet_ntop', async t => {
  t.same(parseIp('192.0.2.1'), { ok: true, value: { address: '192.0.2.1', family: 4 } })
  t.same(parseIp('2001:DB8:0:0:0::1'), { ok: true, value: { address: '2001:db8::1', family: 6 } })
  t.same(parseIp('2001:0db8:0000::0001'), { ok: true, value: { address: '2001:db8::1', family: 6 } })
  t.same(parseIp('0:0:0:0:0:0:0:0'), { ok: true, value: { address: '::', family: 6 } })
  t.same(parseIp('::ffff:192.0.2.1'), { ok: true, value: { address: '::ffff:192.0.2.1', family: 6 } })
})

t.test('parseIp rejects malformed addresses with a message naming them', async t => {
  t.same(parseIp('999.1.1.1'), { ok: false, message: '999.1.1.1 is not a valid IPv4 or IPv6 address' })
  t.same(parseIp('010.1.1.1'), { ok: false, message: '010.1.1.1 is not a valid IPv4 or IPv6 address' })
  t.same(parseIp('1.2.3'), { ok: false, message: '1.2.3 is not a valid IPv4 or IPv6 address' })
  t.same(parseIp('1.2.3.4.5'), { ok: false, message: '1.2.3.4.5 is not a valid IPv4 or IPv6 address' })
  t.same(parseIp(''), { ok: false, message: ' is not a valid IPv4 or IPv6 address' })
  t.same(parseIp('2001:db8:::1'), { ok: false, message: '2001:db8:::1 is not a valid IPv4 or IPv6 address' })
  t.same(parseIp(' 1.2.3.4'), { ok: false, message: ' 1.2.3.4 is not a valid IPv4 or IPv6 address' })
  t.same(parseIp('fe80::1%eth0'), { ok: false, message: 'fe80::1%eth0 has a zone index; zones are not supported here' })
})

t.test('parseCidr: prefix, host bits, ranges', async t => {
  t.same(parseCidr('192.0.2.7/24', { hostBits: 'normalise' }), { ok: true, value: { address: '192.0.2.0', family: 4, prefix: 24 } })
  t.same(parseCidr('192.0.2.7/24', { hostBits: 'keep' }), { ok: true, value: { address: '192.0.2.7', family: 4, prefix: 24 } })
  t.same(parseCidr('192.0.2.7', { hostBits: 'normalise' }), { ok: true, value: { address: '192.0.2.7', family: 4, prefix: 32 } })
  t.same(parseCidr('2001:DB8::FFFF/32', { hostBits: 'normalise' }), { ok: true, value: { address: '2001:db8::', family: 6, prefix: 32 } })
  t.same(parseCidr('2001:db8::1', { hostBits: 'normalise' }), { ok: true, value: { address: '2001:db8::1', family: 6, prefix: 128 } })
  t.same(parseCidr('0.0.0.0/0', { hostBits: 'normalise' }), { ok: true, value: { address: '0.0.0.0', family: 4, prefix: 0 } })
  t.same(parseCidr('10.1.2.3/9', { hostBits: 'normalise' }), { ok: true, value: { address: '10.0.0.0', family: 4, prefix: 9 } })
  t.same(parseCidr('192.0.2.7', { hostBits: 'keep', prefixRequired: true }), { ok: false, message: '192.0.2.7 needs a prefix length (/N)' })
  t.same(parseCidr('192.0.2.0/33', { hostBits: 'keep' }), { ok: false, message: 'prefix length must be a number from 0 to 32' })
  t.same(parseCidr('2001:db8::/129', { hostBits: 'keep' }), { ok: false, message: 'prefix length must be a number from 0 to 128' })
  t.same(parseCidr('192.0.2.0/024', { hostBits: 'keep' }), { ok: false, message: 'prefix length must be a number from 0 to 32' })
  t.same(parseCidr('192.0.2.0/', { hostBits: 'keep' }), { ok: false, message: 'prefix length must be a number from 0 to 32' })
  t.same(parseCidr('192.0.2.0/-1', { hostBits: 'keep' }), { ok: false, message: 'prefix length must be a number from 0 to 32' })
  t.same(parseCidr('192.0.2.0/24/8', { hostBits: 'keep' }), { ok: false, message: 'prefix length must be a number from 0 to 32' })
  t.same(parseCidr('999.0.2.0/24', { hostBits: 'keep' }), { ok: false, message: '999.0.2.0 is not a valid IPv4 or IPv6 address' })
})

t.test('networkAddress handles embedded IPv4 and every prefix', async t => {
  t.equal(networkAddress({ address: '::ffff:192.0.2.77', family: 6 }, 120), '::ffff:192.0.2.0')
  t.equal(networkAddress({ address: '2001:db8:1:2:3:4:5:6', family: 6 }, 64), '2001:db8:1:2::')
  t.equal(networkAddress({ address: '255.255.255.255', family: 4 }, 1), '128.0.0.0')
  t.same(Array.from(addressBytes({ address: '::1.2.3.4', family: 6 })), [0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 2, 3, 4])
})

t.test('property: a full-length prefix keeps any address; the network contains the address', async t => {
  const v4 = fc.tuple(fc.nat(255), fc.nat(255), fc.nat(255), fc.nat(255)).map(b => b.join('.'))
  const v6 = fc.array(fc.nat(0xffff), { minLength: 8, maxLength: 8 }).map(g => g.map(x => x.toString(16)).join(':'))
  fc.assert(fc.property(fc.oneof(v4, v6, fc.ipV4(), fc.ipV6()), fc.nat(128), (text, p) => {
    const ip = parseIp(text)
    if (!ip.ok) throw new Error(`generated ${text} should parse`)
    const full = ip.value.family === 4 ? 32 : 128
    if (networkAddress(ip.value, full) !== ip.value.address) throw new Error(`${text} changed`)
    const prefix = p % (full + 1)
    const cidr = { address: networkAddress(ip.value, prefix), family: ip.value.family, prefix }
    return cidrContains(cidr, ip.value) && parseIp(cidr.address).ok
  }), { numRuns: 1000 })
})

t.test('cidrContains, isUnspecified, isMulticast, withPort', async t => {
  t.ok(cidrContains({ address: '192.0.2.0', family: 4, prefix: 24 }, { address: '192.0.2.255', family: 4 }))
  t.notOk(cidrContains({ address: '192.0.2.0', family: 4, prefix: 24 }, { address: '192.0.3.0', family: 4 }))
  t.notOk(cidrContains({ address: '::', family: 6, prefix: 0 }, { address: '192.0.2.1', family: 4 }))
  t.ok(isUnspecified({ address: '0.0.0.0', family: 4 }))
  t.ok(isUnspecified({ address: '::', family: 6 }))
  t.notOk(isUnspecified({ address: '::1', family: 6 }))
  t.ok(isMulticast({ address: '224.0.0.1', family: 4 }))
  t.ok(isMulticast({ address: '239.255.255.255', family: 4 }))
  t.notOk(isMulticast({ address: '240.0.0.1', family: 4 }))
  t.ok(isMulticast({ address: 'ff02::1', family: 6 }))
  t.notOk(isMulticast({ address: 'fe80::1', family: 6 }))
  t.equal(withPort({ address: '192.0.2.1', family: 4 }, 80), '192.0.2.1:80')
  t.equal(withPort({ address: '2001:db8::1', family: 6 }, 80), '[2001:db8::1]:80')
})

t.test('parsePort: 1–65535 in plain decimal', async t => {
  t.same(parsePort('1'), { ok: true, value: 1 })
  t.same(parsePort('65535'), { ok: true, value: 65535 })
  for (const bad of ['0', '65536', '080', '-1', '+80', '8 0', '', '1e3', '0x50', '80.0', '99999999999999999999', '٨٠']) {
    t.same(parsePort(bad), { ok: false, message: 'port must be a number from 1 to 65535' }, JSON.stringify(bad))
  }
})

t.test('parseHostname: labels, case, trailing dot, numeric last label, dot requirement', async t => {
  t.same(parseHostname('Example.COM.', { requireDot: false }), { ok: true, value: 'example.com' })
  t.same(parseHostname('intranet', { requireDot: false }), { ok: true, value: 'intranet' })
  t.same(parseHostname('a-b.c0', { requireDot: true }), { ok: true, value: 'a-b.c0' })
  t.same(parseHostname('invalid', { requireDot: true }), { ok: false, message: 'invalid is not an IP address, and a host name must contain a dot' })
  t.same(parseHostname('999.1.1.1', { requireDot: true }), { ok: false, message: '999.1.1.1 is not a valid IPv4 address' })
  t.same(parseHostname('1.2.3.4.5', { requireDot: true }), { ok: false, message: '1.2.3.4.5 is not a valid IPv4 address' })
  t.same(parseHostname('a..b', { requireDot: false }), { ok: false, message: 'a..b is not a valid IP address or host name' })
  t.same(parseHostname('-a.b', { requireDot: false }), { ok: false, message: '-a.b is not a valid IP address or host name' })
  t.same(parseHostname('under_score.com', { requireDot: false }), { ok: false, message: 'under_score.com is not a valid IP address or host name' })
  t.same(parseHostname('.', { requireDot: false }), { ok: false, message: '. is not a valid host name' })
  t.same(parseHostname(`${'a'.repeat(64)}.com`, { requireDot: false }), { ok: false, message: `${'a'.repeat(64)}.com is not a valid IP address or host name` })
  const long = Array.from({ length: 64 }, () => 'abc').join('.')
  t.same(parseHostname(long, { requireDot: false }), { ok: false, message: `${long} is not a valid host name` })
})

t.test('parseMac: unicast, lower case, colons', async t => {
  t.same(parseMac('02:00:5E:10:00:01'), { ok: true, value: '02:00:5e:10:00:01' })
  t.same(parseMac('02-00-5e-10-00-01'), { ok: true, value: '02:00:5e:10:00:01' })
  t.same(parseMac('01:00:5e:00:00:01'), { ok: false, message: '01:00:5e:00:00:01 is a multicast MAC address; a link needs a unicast one' })
  t.same(parseMac('ff:ff:ff:ff:ff:ff'), { ok: false, message: 'ff:ff:ff:ff:ff:ff is a multicast MAC address; a link needs a unicast one' })
  t.same(parseMac('00:00:00:00:00:00'), { ok: false, message: '00:00:00:00:00:00 is the all-zero MAC address' })
  for (const bad of ['02:00:5e:10:00', '02:00:5e:10:00:01:02', '02:00-5e:10:00:01', '0200.5e10.0001', 'zz:00:5e:10:00:01']) {
    t.same(parseMac(bad), { ok: false, message: `${bad} is not a MAC address (expected six hex bytes like 02:00:5e:10:00:01)` })
  }
})
