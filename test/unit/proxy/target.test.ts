import t from 'tap'
import fc from 'fast-check'
import {
  canonicalIpBytes, embeddedIpv4, embeddedIpv4Bytes, formatIpBytes, ipBytes, parseAbsoluteTarget, parseAuthorityTarget, parseHost, parseIpAddress
} from '../../../src/proxy/target.js'

const hostOf = (text: string): unknown => {
  const r = parseHost(text)
  return r.ok ? r.value : { error: r.reason }
}
const v4 = (address: string): unknown => ({ kind: 'ip', address: { address, family: 4 } })
const v6 = (address: string): unknown => ({ kind: 'ip', address: { address, family: 6 } })

t.test('every IPv4 notation inet_aton and the WHATWG parser accept becomes the dotted quad', async t => {
  for (const [text, want] of [
    ['192.0.2.7', '192.0.2.7'],
    ['3221225991', '192.0.2.7'],
    ['0xc0000207', '192.0.2.7'],
    ['0XC0000207', '192.0.2.7'],
    ['0300.0.02.07', '192.0.2.7'],
    ['0300.0000.0002.0007', '192.0.2.7'],
    ['192.0.519', '192.0.2.7'],
    ['192.519', '192.0.2.7'],
    ['0xc0.0x0.0x2.0x7', '192.0.2.7'],
    ['192.0.2.7.', '192.0.2.7'],
    ['%31%39%32.0.2.7', '192.0.2.7'],
    ['\uff11\uff19\uff12\uff0e\uff10\uff0e\uff12\uff0e\uff17', '192.0.2.7'],
    ['127.1', '127.0.0.1'],
    ['0', '0.0.0.0']
  ] as const) {
    t.same(hostOf(text), v4(want), text)
  }
})

t.test('IPv6 literals are canonical; IPv4-mapped ones in any spelling are IPv4', async t => {
  t.same(hostOf('[2001:DB8:0:0:0:0:0:1]'), v6('2001:db8::1'))
  t.same(hostOf('[2001:db8:0000::0001]'), v6('2001:db8::1'))
  t.same(hostOf('[::1]'), v6('::1'))
  for (const text of ['[::ffff:192.0.2.7]', '[::ffff:c000:207]', '[::FFFF:C000:0207]', '[0:0:0:0:0:ffff:192.0.2.7]', '[::ffff:0300.0.2.7]']) {
    const got = hostOf(text)
    if (text === '[::ffff:0300.0.2.7]') t.ok((got as { error?: string }).error !== undefined, `${text} is not an address`)
    else t.same(got, v4('192.0.2.7'), text)
  }
  t.ok((hostOf('[fe80::1%25eth0]') as { error?: string }).error, 'zone ids are refused')
  t.ok((hostOf('[1:2:3:4:5:6:7:8:9]') as { error?: string }).error)
})

t.test('names come out lower case, punycoded, without the trailing dot', async t => {
  t.same(hostOf('API.Example.COM.'), { kind: 'name', name: 'api.example.com' })
  t.same(hostOf('bücher.de'), { kind: 'name', name: 'xn--bcher-kva.de' })
  t.same(hostOf('_srv.example.com'), { kind: 'name', name: '_srv.example.com' })
  for (const bad of ['', 'a..b', 'foo.123', 'exa mple.com', 'a*b.com', 'a@b', 'a:b', 'a/b', 'a\\b', '1.2.3.4.5', '256.0.0.1', '0x100000000', `${'a'.repeat(64)}.com`]) {
    t.ok((hostOf(bad) as { error?: string }).error !== undefined, `'${bad}' is refused`)
  }
})

t.test('a host parsed again gives the same answer, also past the bound of remembered hosts', async t => {
  for (let round = 0; round < 2; round++) {
    t.same(hostOf('0xc0000207'), v4('192.0.2.7'), `round ${round}: a literal`)
    t.same(hostOf('API.example.com.'), { kind: 'name', name: 'api.example.com' }, `round ${round}: a name`)
    t.ok((hostOf('a..b') as { error?: string }).error !== undefined, `round ${round}: a refusal`)
  }
  // 3000 distinct hosts: the cache (1024) is cleared twice on the way; each still parses to itself
  for (let i = 0; i < 3000; i++) {
    const name = `h${i}.example.com`
    const got = hostOf(name.toUpperCase())
    if ((got as { name?: string }).name !== name) t.fail(`${name}: ${JSON.stringify(got)}`)
    const address = `198.51.${i >> 8 & 0xff}.${i & 0xff}`
    if (JSON.stringify(hostOf(address)) !== JSON.stringify(v4(address))) t.fail(address)
  }
  t.same(hostOf('0xc0000207'), v4('192.0.2.7'), 'the first literal, after the clears')
})

t.test('random IPv4 addresses written in random inet_aton notations parse back to themselves', async t => {
  const radix = fc.constantFrom<'dec' | 'hex' | 'oct'>('dec', 'hex', 'oct')
  const write = (n: number, r: 'dec' | 'hex' | 'oct'): string => r === 'dec' ? String(n) : r === 'hex' ? `0x${n.toString(16)}` : `0${n.toString(8)}`
  fc.assert(fc.property(fc.integer({ min: 0, max: 0xffffffff }), fc.integer({ min: 1, max: 4 }), fc.array(radix, { minLength: 4, maxLength: 4 }), fc.boolean(), (n, parts, radices, dot) => {
    const b = [n >>> 24, (n >>> 16) & 0xff, (n >>> 8) & 0xff, n & 0xff]
    // a.b.c.d | a.b.(16 bits) | a.(24 bits) | (32 bits)
    const nums = parts === 4 ? b : parts === 3 ? [b[0]!, b[1]!, (b[2]! << 8) | b[3]!] : parts === 2 ? [b[0]!, n & 0xffffff] : [n]
    const text = nums.map((x, i) => write(x, radices[i]!)).join('.') + (dot ? '.' : '')
    const got = parseHost(text)
    return got.ok && got.value.kind === 'ip' && got.value.address.address === b.join('.')
  }), { numRuns: 2000 })
  t.pass('2000 notations')
})

t.test('IPv6 text round-trips through bytes in RFC 5952 form', async t => {
  fc.assert(fc.property(fc.uint8Array({ minLength: 16, maxLength: 16 }), fc.integer({ min: 0, max: 15 }), fc.integer({ min: 0, max: 8 }), (bytes, at, zeros) => {
    bytes.fill(0, at, Math.min(16, at + zeros * 2))
    const a = formatIpBytes(bytes)
    const again = parseIpAddress(a.address)
    if (again === null || again.address !== a.address) return false
    return a.family === 4 || Buffer.from(ipBytes(a)).equals(Buffer.from(bytes))
  }), { numRuns: 2000 })
  t.equal(formatIpBytes(ipBytes({ address: '2001:db8:0:0:1:0:0:1', family: 6 })).address, '2001:db8::1:0:0:1', 'first longest run')
  t.equal(formatIpBytes(ipBytes({ address: '2001:0:0:1:0:0:0:1', family: 6 })).address, '2001:0:0:1::1', 'longest run wins')
  t.equal(formatIpBytes(ipBytes({ address: '2001:db8:0:1:1:1:1:1', family: 6 })).address, '2001:db8:0:1:1:1:1:1', 'a single zero group is not compressed')
})

t.test('translator-embedded IPv4 is found in NAT64, SIIT, 6to4 and IPv4-compatible addresses', async t => {
  const e = (a: string): string | null => embeddedIpv4(parseIpAddress(a)!)?.address ?? null
  t.equal(e('64:ff9b::c000:207'), '192.0.2.7')
  t.equal(e('64:ff9b::192.0.2.7'), '192.0.2.7')
  t.equal(e('::ffff:0:c000:207'), '192.0.2.7')
  t.equal(e('2002:c000:207::1'), '192.0.2.7')
  t.equal(e('::c000:207'), '192.0.2.7')
  t.equal(e('::1'), null)
  t.equal(e('::'), null)
  t.equal(e('2001:db8::1'), null)
  t.equal(parseIpAddress('::ffff:192.0.2.7')?.address, '192.0.2.7', 'mapped is plain IPv4, not "embedded"')
})

t.test('absolute-form targets: http only, Host from the authority, path kept byte for byte', async t => {
  const a = (s: string): unknown => { const r = parseAbsoluteTarget(s); return r.ok ? r.value : { error: r.reason } }
  t.same(a('http://Example.COM/a/../b?x=%2e%2e#'), { error: "invalid request target 'http://Example.COM/a/../b?x=%2e%2e#'" })
  t.same(a('http://Example.COM/a/../b?x=%2e%2e'), {
    target: { host: { kind: 'name', name: 'example.com' }, port: 80, authority: 'example.com' }, path: '/a/../b?x=%2e%2e'
  })
  t.same(a('http://example.com'), { target: { host: { kind: 'name', name: 'example.com' }, port: 80, authority: 'example.com' }, path: '/' })
  t.same(a('http://example.com?q'), { target: { host: { kind: 'name', name: 'example.com' }, port: 80, authority: 'example.com' }, path: '/?q' })
  t.same(a('HTTP://0xc0000207:8080//x'), {
    target: { host: v4('192.0.2.7'), port: 8080, authority: '192.0.2.7:8080' }, path: '//x'
  })
  t.same(a('http://[::ffff:c000:207]:80/'), { target: { host: v4('192.0.2.7'), port: 80, authority: '192.0.2.7' }, path: '/' })
  t.same(a('http://[2001:db8::7]:81/'), { target: { host: v6('2001:db8::7'), port: 81, authority: '[2001:db8::7]:81' }, path: '/' })
  for (const bad of [
    'https://example.com/', 'ftp://example.com/', '/relative', 'example.com:80', 'http://user:pw@example.com/',
    'http://allowed.com\\@evil.com/', 'http://example.com:0/', 'http://example.com:65536/', 'http://example.com:8a/',
    'http:///path', 'http://[2001:db8::7/', 'http://[2001:db8::7]x/', 'http://a:b:c/'
  ]) {
    t.ok((a(bad) as { error?: string }).error !== undefined, `'${bad}' is refused`)
  }
})

t.test('authority-form (CONNECT) targets need a port', async t => {
  const c = (s: string): unknown => { const r = parseAuthorityTarget(s); return r.ok ? r.value : { error: r.reason } }
  t.same(c('example.com:443'), { host: { kind: 'name', name: 'example.com' }, port: 443, authority: 'example.com:443' })
  t.same(c('3221225991:443'), { host: v4('192.0.2.7'), port: 443, authority: '192.0.2.7:443' })
  t.same(c('[::ffff:192.0.2.7]:443'), { host: v4('192.0.2.7'), port: 443, authority: '192.0.2.7:443' })
  t.same(c('[2001:db8::7]:8443'), { host: v6('2001:db8::7'), port: 8443, authority: '[2001:db8::7]:8443' })
  for (const bad of ['example.com', 'example.com:', '[2001:db8::7]', 'example.com:0', 'user@example.com:443', 'example.com:443/x', 'http://example.com:443']) {
    t.ok((c(bad) as { error?: string }).error !== undefined, `'${bad}' is refused`)
  }
})

t.test('canonicalIpBytes (the ACL\'s one-parse path): 16 bytes of any IPv6 spelling, 4 of IPv4 and IPv4-mapped; embeddedIpv4Bytes on them', async t => {
  // addresses of every kind the ACL meets: plain IPv6, IPv4-mapped, NAT64, SIIT, 6to4, IPv4-compatible
  const prefixes = [[], [0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff], [0, 0x64, 0xff, 0x9b, 0, 0, 0, 0, 0, 0, 0, 0], [0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 0, 0], [0x20, 0x02], new Array<number>(12).fill(0)]
  const mapped = (b: Uint8Array): boolean => b.subarray(0, 10).every(x => x === 0) && b[10] === 0xff && b[11] === 0xff
  fc.assert(fc.property(fc.uint8Array({ minLength: 16, maxLength: 16 }), fc.constantFrom(...prefixes), fc.boolean(), (random, prefix, upper) => {
    const bytes = Uint8Array.from(random)
    bytes.set(prefix, 0)
    const text = formatIpBytes(bytes).address
    const got = canonicalIpBytes(upper ? text.toUpperCase() : text)
    const expected = mapped(bytes) ? bytes.subarray(12) : bytes
    return got !== null && Buffer.from(got).equals(Buffer.from(expected))
  }), { numRuns: 2000 })
  t.same(canonicalIpBytes('::ffff:192.0.2.7'), Uint8Array.from([192, 0, 2, 7]), 'mapped: 4 bytes')
  t.same(canonicalIpBytes('192.0.2.7'), Uint8Array.from([192, 0, 2, 7]))
  t.equal(canonicalIpBytes('2001:db8::%eth0'), null, 'a zone is not an address')
  t.equal(canonicalIpBytes('192.0.2.07'), null, 'leading zeros are not an address')
  const inner = (a: string): string | null => {
    const b = embeddedIpv4Bytes(canonicalIpBytes(a)!)
    return b === null ? null : Array.from(b).join('.')
  }
  t.equal(inner('64:ff9b::c000:207'), '192.0.2.7', 'NAT64')
  t.equal(inner('::ffff:0:c000:207'), '192.0.2.7', 'SIIT')
  t.equal(inner('2002:c000:207::1'), '192.0.2.7', '6to4')
  t.equal(inner('::c000:207'), '192.0.2.7', 'IPv4-compatible')
  t.equal(inner('::1'), null)
  t.equal(inner('2001:db8::1'), null)
  t.equal(inner('::ffff:192.0.2.7'), null, 'mapped is plain IPv4: 4 bytes carry nothing inside')
})
