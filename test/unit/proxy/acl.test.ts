import t from 'tap'
import fc from 'fast-check'
import type { AclRule, IpAddress } from '../../../src/config/types.js'
import { DnsError } from '../../../src/errors.js'
import { admit, compileAcl, compileClientFilter, describeDenial, type NameResolver } from '../../../src/proxy/acl.js'
import { parseHost } from '../../../src/proxy/target.js'
import { aclRules } from '../../helpers/acl.js'

/** Rules through the real parser (src/config/http-acl.ts). */
const rules = aclRules

const ip = (address: string): IpAddress => ({ address, family: address.includes(':') ? 6 : 4 })
const verdict = (d: { action: string, rule: 'default' | { line: number }, address: IpAddress | null }): string =>
  `${d.action}:${d.rule === 'default' ? 'default' : d.rule.line}${d.address === null ? '' : `@${d.address.address}`}`

t.test('each rule form allows and denies', async t => {
  const acl = compileAcl(rules(`
    api.example.com
    !bad.example.org
    *.example.org
    192.0.2.7
    !198.51.100.0/24
    203.0.113.0/25
    2001:db8:1::/48
    !2001:db8::/32
  `))
  const d = (host: string | undefined, ...addrs: string[]): string => verdict(acl.decide({ host, addresses: addrs.map(ip) }))
  t.equal(d('api.example.com', '8.8.8.8'), 'allow:1@8.8.8.8', 'exact name')
  t.equal(d('API.Example.com.', '8.8.8.8'), 'allow:1@8.8.8.8', 'case and trailing dot ignored')
  t.equal(d('x.api.example.com', '8.8.8.8'), 'deny:default@8.8.8.8', 'an exact name is not a suffix')
  t.equal(d('example.org', '8.8.8.8'), 'allow:3@8.8.8.8', '*.domain covers the domain itself')
  t.equal(d('a.b.example.org', '8.8.8.8'), 'allow:3@8.8.8.8', '*.domain covers every subdomain')
  t.equal(d('notexample.org', '8.8.8.8'), 'deny:default@8.8.8.8', 'label boundary respected')
  t.equal(d('bad.example.org', '8.8.8.8'), 'deny:2', 'denied name (first match before the suffix)')
  t.equal(d(undefined, '192.0.2.7'), 'allow:4@192.0.2.7', 'single address')
  t.equal(d(undefined, '192.0.2.8'), 'deny:default@192.0.2.8')
  t.equal(d(undefined, '198.51.100.200'), 'deny:5@198.51.100.200', 'denied range')
  t.equal(d(undefined, '203.0.113.127'), 'allow:6@203.0.113.127')
  t.equal(d(undefined, '203.0.113.128'), 'deny:default@203.0.113.128', 'prefix boundary')
  t.equal(d(undefined, '2001:db8:1:ffff::1'), 'allow:7@2001:db8:1:ffff::1')
  t.equal(d(undefined, '2001:db8:2::1'), 'deny:8@2001:db8:2::1')
  t.equal(d('unknown.net', '192.0.2.7'), 'allow:4@192.0.2.7', 'an address rule allows a name resolving into it')
})

t.test('first match wins within names and within addresses', async t => {
  const acl = compileAcl(rules(`
    10.1.2.3
    !10.0.0.0/8
    10.9.9.9
    !*.corp.example
    ok.corp.example
  `))
  t.equal(verdict(acl.decide({ addresses: [ip('10.1.2.3')] })), 'allow:1@10.1.2.3', 'exception above the range')
  t.equal(verdict(acl.decide({ addresses: [ip('10.9.9.9')] })), 'deny:2@10.9.9.9', 'shadowed allow below the range')
  t.equal(verdict(acl.decide({ host: 'ok.corp.example', addresses: [ip('8.8.8.8')] })), 'deny:4', 'shadowed name allow')
})

t.test('an allowed name that resolves into a denied range is denied, whatever the line order', async t => {
  for (const text of ['api.example.com\n!10.0.0.0/8\n*', '!10.0.0.0/8\napi.example.com', '*.example.com\n!10.0.0.0/8']) {
    const acl = compileAcl(rules(text))
    const d = acl.decide({ host: 'api.example.com', addresses: [ip('10.0.0.5')] })
    t.equal(d.action, 'deny', text.replaceAll('\n', ' | '))
    t.equal(d.address?.address, '10.0.0.5')
    t.match(describeDenial(d), /^denied by rule line \d '!10\.0\.0\.0\/8' \(resolved address 10\.0\.0\.5\)$/)
  }
  const acl = compileAcl(rules('api.example.com\n!10.0.0.0/8'))
  t.equal(verdict(acl.decide({ host: 'api.example.com', addresses: [ip('192.0.2.1'), ip('10.0.0.5')] })), 'deny:2@10.0.0.5',
    'one denied address among several denies the request')
  t.equal(verdict(acl.decide({ host: 'api.example.com', addresses: [ip('::ffff:10.0.0.5')] })), 'deny:2@10.0.0.5',
    'an AAAA answer that is IPv4-mapped is checked as IPv4')
  t.equal(verdict(acl.decide({ host: 'api.example.com', addresses: [ip('64:ff9b::a00:5')] })), 'deny:2@64:ff9b::a00:5',
    'NAT64 of a denied IPv4 address is denied')
  t.equal(verdict(acl.decide({ host: 'api.example.com', addresses: [ip('2001:db8::1'), ip('192.0.2.1')] })), 'allow:1@2001:db8::1',
    'otherwise an allowed name allows all its addresses')
})

t.test('name rules never match an IP-literal request; addresses not matched are not used', async t => {
  const acl = compileAcl(rules('api.example.com\n198.51.100.0/24'))
  t.equal(verdict(acl.decide({ addresses: [ip('192.0.2.1')] })), 'deny:default@192.0.2.1')
  const d = acl.decide({ host: 'other.example', addresses: [ip('192.0.2.1'), ip('198.51.100.9'), ip('198.51.100.10')] })
  t.equal(verdict(d), 'allow:2@198.51.100.9', 'connects to the first address that was checked and allowed')
  t.same(d.candidates.map(a => a.address), ['198.51.100.9', '198.51.100.10'])
  t.equal(verdict(acl.decide({ host: 'other.example', addresses: [] })), 'deny:default')
})

t.test('`*` allows names and addresses; without it everything unmatched is denied', async t => {
  t.equal(verdict(compileAcl(rules('!10.0.0.0/8\n*')).decide({ host: 'x.y', addresses: [ip('192.0.2.1')] })), 'allow:2@192.0.2.1')
  t.equal(verdict(compileAcl(rules('!10.0.0.0/8\n*')).decide({ addresses: [ip('2001:db8::1')] })), 'allow:2@2001:db8::1')
  t.equal(verdict(compileAcl([]).decide({ host: 'x.y', addresses: [ip('192.0.2.1')] })), 'deny:default@192.0.2.1')
})

t.test('rules written as IPv4-mapped IPv6 apply to IPv4; `!::/0` means only IPv6', async t => {
  const acl = compileAcl(rules('!::ffff:10.0.0.0/104\n!::/0\n*'))
  t.equal(verdict(acl.decide({ addresses: [ip('10.2.3.4')] })), 'deny:1@10.2.3.4')
  t.equal(verdict(acl.decide({ addresses: [ip('11.2.3.4')] })), 'allow:3@11.2.3.4')
  t.equal(verdict(acl.decide({ addresses: [ip('2001:db8::1')] })), 'deny:2@2001:db8::1')
})

t.test('checkName answers without a lookup when it can', async t => {
  const acl = compileAcl(rules('!*.ads.example\napi.example.com'))
  t.equal(verdict(acl.checkName('x.ads.example')!), 'deny:1')
  t.equal(verdict(acl.checkName('elsewhere.example')!), 'deny:default', 'nothing could allow it: no address allow rule')
  t.equal(acl.checkName('api.example.com'), null)
  t.equal(compileAcl(rules('10.0.0.0/8')).checkName('elsewhere.example'), null, 'an address rule might allow it')
})

t.test('the compiled decision equals a plain first-match scan of the documented semantics', async t => {
  // Reference: per kind, scan in order; deny in either kind wins; else allow if either allows.
  const names = ['a.example', 'b.a.example', 'c.example', 'example']
  const nets = ['10.0.0.0/8', '10.1.0.0/16', '10.1.2.3', '192.0.2.0/24', '0.0.0.0/0', '192.0.2.128/25']
  const ruleText = fc.oneof(
    fc.constantFrom(...names), fc.constantFrom(...names.map(n => `*.${n}`)), fc.constantFrom(...nets)
  ).chain(r => fc.boolean().map(deny => deny ? `!${r}` : r))
  const inNet = (a: string, net: string): boolean => {
    const [base = '', p = '32'] = net.split('/')
    const n = (s: string): number => s.split('.').reduce((x, o) => x * 256 + Number(o), 0)
    const bits = Number(p)
    return bits === 0 || Math.floor(n(a) / 2 ** (32 - bits)) === Math.floor(n(base) / 2 ** (32 - bits))
  }
  fc.assert(fc.property(fc.array(ruleText, { maxLength: 8 }), fc.boolean(), fc.option(fc.constantFrom(...names), { nil: undefined }),
    fc.array(fc.constantFrom('10.1.2.3', '10.1.9.9', '10.200.0.1', '192.0.2.1', '192.0.2.200', '8.8.8.8'), { minLength: 1, maxLength: 3 }),
    (texts, star, host, addrs) => {
      const list = rules([...texts, ...(star ? ['*'] : [])].join('\n'))
      const firstName = host === undefined ? undefined : list.find(r =>
        r.match.kind === 'any' || (r.match.kind === 'host' && r.match.name === host) ||
        (r.match.kind === 'domain' && (host === r.match.domain || host.endsWith(`.${r.match.domain}`))))
      const firstAddr = (a: string): AclRule | undefined => list.find(r => r.match.kind === 'any' || (r.match.kind === 'cidr' && inNet(a, `${r.match.cidr.address}/${r.match.cidr.prefix}`)))
      let want: string
      if (firstName?.action === 'deny') want = `deny:${firstName.line}`
      else {
        const denied = addrs.map(a => [a, firstAddr(a)] as const).find(([, r]) => r?.action === 'deny')
        if (denied !== undefined) want = `deny:${denied[1]!.line}@${denied[0]}`
        else {
          const allowed = addrs.find(a => firstName !== undefined || firstAddr(a) !== undefined)
          if (allowed === undefined) want = `deny:default@${addrs[0]}`
          else {
            const byLine = [firstName, firstAddr(allowed)].filter(r => r !== undefined).sort((x, y) => x.line - y.line)[0]!
            want = `allow:${byLine.line}@${allowed}`
          }
        }
      }
      return verdict(compileAcl(list).decide({ host, addresses: addrs.map(ip) })) === want
    }), { numRuns: 3000 })
  t.pass('3000 random rule lists')
})

t.test('client filter', async t => {
  const allowed = compileClientFilter([{ address: '10.128.0.0', family: 4, prefix: 14 }, { address: 'fd00::', family: 6, prefix: 8 }])
  t.ok(allowed(ip('10.129.1.1')))
  t.ok(allowed(ip('::ffff:10.129.1.1')), 'mapped client address')
  t.ok(allowed(ip('fd12::1')))
  t.notOk(allowed(ip('10.132.0.1')))
  t.notOk(allowed(ip('192.0.2.1')))
  t.ok(compileClientFilter(null)(ip('192.0.2.1')), 'null = anyone')
  t.notOk(compileClientFilter([])(ip('192.0.2.1')), 'empty list = nobody')
})

/** An honest in-memory resolver: a zone of names; unknown names are NXDOMAIN. */
class FakeResolver implements NameResolver {
  readonly queries: string[] = []
  constructor (readonly zone: Record<string, string[] | DnsError>) {}
  async resolve (name: string): Promise<{ addresses: readonly IpAddress[] }> {
    this.queries.push(name)
    const entry = this.zone[name]
    if (entry instanceof DnsError) throw entry
    if (entry === undefined) throw new DnsError('ENOTFOUND', name, 'no such name')
    return { addresses: entry.map(ip) }
  }
}

t.test('admit resolves once, decides, and picks an address of the source family', async t => {
  const acl = compileAcl(rules('!*.blocked.example\napi.example.com\nv6only.example\n!10.0.0.0/8'))
  const resolver = new FakeResolver({
    'api.example.com': ['2001:db8::5', '192.0.2.5'],
    'v6only.example': ['2001:db8::6'],
    'evil.example': ['10.0.0.1'],
    'flaky.example': new DnsError('ESERVFAIL', 'flaky.example', 'server failure')
  })
  const host = (s: string): ReturnType<typeof parseHost> extends { ok: true, value: infer V } ? V : never => {
    const h = parseHost(s)
    if (!h.ok) throw new Error(h.reason)
    return h.value as never
  }
  const a = await admit(acl, resolver, host('api.example.com'), 4)
  t.equal(a.kind, 'allow')
  t.equal(a.kind === 'allow' ? a.address.address : null, '192.0.2.5', 'the IPv4 candidate for an IPv4 source')
  t.equal((await admit(acl, resolver, host('api.example.com'), 6) as { address: IpAddress }).address.address, '2001:db8::5')
  t.equal((await admit(acl, resolver, host('v6only.example'), 4)).kind, 'no-route')
  t.equal((await admit(acl, resolver, host('x.blocked.example'), 4)).kind, 'deny')
  t.equal((await admit(acl, resolver, host('nowhere.example'), 4)).kind, 'deny', 'default deny without a lookup')
  t.equal((await admit(acl, resolver, host('flaky.example'), 4)).kind, 'deny', 'not allowed by name: never looked up')
  t.same(resolver.queries, ['api.example.com', 'api.example.com', 'v6only.example'], 'denied names were never looked up')

  const open = compileAcl(rules('!10.0.0.0/8\n*'))
  t.equal((await admit(open, resolver, host('evil.example'), 4)).kind, 'deny')
  const u = await admit(open, resolver, host('flaky.example'), 4)
  t.same(u.kind === 'unresolved' ? u.code : u.kind, 'ESERVFAIL')
  const n = await admit(open, resolver, host('nowhere.example'), 4)
  t.same(n.kind === 'unresolved' ? n.code : n.kind, 'ENOTFOUND')
  t.equal((await admit(open, resolver, host('0x0a000001'), 4)).kind, 'deny', 'numeric notation of a denied address')
})
