/**
 * Property-based tests: random and mutated inputs only ever produce a config or clean issues —
 * never an exception, never a hang (bounded runs over linear-time parsers) — and generated valid
 * inputs parse to exactly what was generated.
 */
import t from 'tap'
import fc from 'fast-check'
import type { ConfigIssue } from '../../../src/errors.js'
import { parseConfig } from '../../../src/config/config.js'
import { parseDestination } from '../../../src/config/destination.js'
import { parseDnsForwards } from '../../../src/config/dns-forwards.js'
import { VARIABLES } from '../../../src/config/env.js'
import { parseHttpAcl } from '../../../src/config/http-acl.js'
import type { RawSettings } from '../../../src/config/types.js'

const RUNS = 1000

/** Characters the grammars care about, plus some they must refuse. */
const alphabet = fc.constantFrom(...'0123456789abcdefxyz.:/ \t\r\n#!*-_%[]TCPudptcp\\\u00a0é'.split(''))
const noise = fc.string({ unit: alphabet, maxLength: 80 })

/** A few random edits (insert, delete, replace) of a valid text. */
function mutated (valid: fc.Arbitrary<string>): fc.Arbitrary<string> {
  const edit = fc.tuple(fc.nat(), fc.constantFrom('insert', 'delete', 'replace'), alphabet)
  return fc.tuple(valid, fc.array(edit, { maxLength: 4 })).map(([text, edits]) => {
    let s = text
    for (const [at, kind, ch] of edits) {
      const i = s.length === 0 ? 0 : at % s.length
      if (kind === 'insert') s = s.slice(0, i) + ch + s.slice(i)
      else if (kind === 'delete') s = s.slice(0, i) + s.slice(i + 1)
      else s = s.slice(0, i) + ch + s.slice(i + 1)
    }
    return s
  })
}

function cleanIssues (issues: readonly ConfigIssue[], lineCount: number): boolean {
  return issues.length > 0 && issues.every(i =>
    typeof i.variable === 'string' && i.variable.startsWith('EGRESS_') &&
    Number.isInteger(i.line) && i.line >= 0 && i.line <= lineCount &&
    typeof i.text === 'string' && !i.text.includes('\n') &&
    typeof i.message === 'string' && i.message.length > 0 && !i.message.includes('\n'))
}

const v4 = fc.tuple(fc.integer({ min: 1, max: 223 }), fc.nat(255), fc.nat(255), fc.integer({ min: 1, max: 254 })).map(b => b.join('.'))
const port = fc.integer({ min: 1, max: 65535 })
const filler = fc.constantFrom('', '   ', '\t', '# comment', '  # indented', '#80 tcp 1.2.3.4')
const pad = fc.constantFrom('', ' ', '  ', '\t', ' \t ')
const sep = fc.constantFrom(' ', '  ', '   ')

const validDestination = fc.tuple(
  fc.uniqueArray(fc.tuple(port, fc.constantFrom('tcp', 'udp'), v4, fc.option(port, { nil: undefined })), { selector: r => `${r[0]}/${r[1]}`, maxLength: 6 }),
  fc.option(v4, { nil: undefined }),
  fc.array(filler, { maxLength: 8 }), pad, sep
)

t.test('EGRESS_DESTINATION: generated valid rules parse to exactly themselves', async t => {
  fc.assert(fc.property(validDestination, ([rules, fallback, fillers, p, s]) => {
    const lines: string[] = []
    const expected: unknown[] = []
    rules.forEach(([lp, proto, ip, rp], i) => {
      if (fillers[i] !== undefined) lines.push(fillers[i])
      lines.push(`${p}${[lp, proto, ip, ...(rp === undefined ? [] : [rp])].join(s)}${p}`)
      expected.push({ kind: 'port', line: lines.length, protocol: proto, port: lp, target: { address: ip, family: 4 }, targetPort: rp ?? lp, targetPortGiven: rp !== undefined })
    })
    let fb: unknown = null
    if (fallback !== undefined) { lines.push(`${p}${fallback}`); fb = { kind: 'fallback', line: lines.length, target: { address: fallback, family: 4 } } }
    lines.push(...fillers.slice(rules.length))
    const r = parseDestination(lines.join('\n'), { family: 4 })
    t.same(r, { ok: true, value: { rules: expected, fallback: fb } })
    return r.ok
  }), { numRuns: 300 })
})

t.test('EGRESS_DESTINATION: random and mutated text gives rules or clean issues', async t => {
  const valid = validDestination.map(([rules, fallback]) => [...rules.map(r => r.filter(x => x !== undefined).join(' ')), ...(fallback === undefined ? [] : [fallback])].join('\n'))
  fc.assert(fc.property(fc.oneof(noise, mutated(valid)), fc.constantFrom(4 as const, 6 as const, null), (text, family) => {
    const r = parseDestination(text, { family })
    if (!r.ok) return cleanIssues(r.issues, text.split('\n').length)
    return r.value.rules.every(x => x.port >= 1 && x.port <= 65535 && x.targetPort >= 1 && x.targetPort <= 65535 && (family === null || x.target.family === family))
  }), { numRuns: RUNS })
})

t.test('EGRESS_HTTP_PROXY_DESTINATION: random and mutated text gives rules or clean issues', async t => {
  const rule = fc.oneof(fc.domain(), fc.domain().map(d => `*.${d}`), v4, v4.map(a => `${a}/24`), fc.ipV6(), fc.constant('2001:db8::/32'))
  const valid = fc.tuple(fc.array(fc.tuple(fc.boolean(), rule), { maxLength: 6 }), fc.boolean())
    .map(([rules, star]) => [...rules.map(([neg, r]) => `${neg ? '!' : ''}${r}`), ...(star ? ['*'] : [])].join('\n'))
  fc.assert(fc.property(valid, text => parseHttpAcl(text).ok), { numRuns: 300 })
  fc.assert(fc.property(fc.oneof(noise, mutated(valid)), text => {
    const r = parseHttpAcl(text)
    if (!r.ok) return cleanIssues(r.issues, text.split('\n').length)
    const anyAt = r.value.findIndex(x => x.match.kind === 'any')
    return anyAt === -1 || r.value.slice(anyAt).every(x => x.match.kind === 'any')
  }), { numRuns: RUNS })
})

t.test('EGRESS_DNS_PROXY_DESTINATION: random and mutated text gives forwards or clean issues', async t => {
  const target = fc.oneof(v4, fc.domain().filter(d => d.includes('.') && !/\.[0-9]+$/.test(d)))
  const valid = fc.uniqueArray(fc.tuple(port, target, fc.option(port, { nil: undefined })), { selector: f => f[0], maxLength: 6 })
    .map(fs => fs.map(f => f.filter(x => x !== undefined).join(' ')).join('\n'))
  fc.assert(fc.property(valid, text => parseDnsForwards(text, { family: 4 }).ok), { numRuns: 300 })
  fc.assert(fc.property(fc.oneof(noise, mutated(valid)), text => {
    const r = parseDnsForwards(text, { family: 4 })
    if (!r.ok) return cleanIssues(r.issues, text.split('\n').length)
    return new Set(r.value.map(f => f.port)).size === r.value.length
  }), { numRuns: RUNS })
})

t.test('parseConfig: any settings give a frozen config or clean issues, never an exception', async t => {
  const validValues: Record<string, fc.Arbitrary<string>> = {
    EGRESS_ROUTER_MODE: fc.constantFrom('init', 'legacy', 'redirect', 'http-proxy', 'dns-proxy', 'unit-test'),
    EGRESS_SOURCE: fc.oneof(v4, v4.map(a => `${a}/24`), fc.constant('2001:db8::99/64')),
    EGRESS_GATEWAY: fc.oneof(v4, fc.constant('2001:db8::1')),
    EGRESS_DESTINATION: fc.constantFrom('10.1.2.3', '80 tcp 10.4.5.6\n10.1.2.3', '53 udp 2001:db8::53'),
    EGRESS_HTTP_PROXY_DESTINATION: fc.constantFrom('*', '*.example.com\n!10.0.0.0/8\n*'),
    EGRESS_DNS_PROXY_DESTINATION: fc.constantFrom('53 10.0.0.53', '8053 dns.example.com 53'),
    EGRESS_HEALTH_ADDRESS: fc.constantFrom('', ':9090', '127.0.0.1:8081', '[::1]:9090'),
    EGRESS_HTTP_PROXY_PORT: fc.constantFrom('8080', '3128', '9090'),
    EGRESS_HTTP_PROXY_CONNECT_PORTS: fc.constantFrom('*', '443,8443'),
    EGRESS_HTTP_PROXY_CLIENTS: fc.constantFrom('10.0.0.0/8', '10.0.0.0/8,2001:db8::/32'),
    EGRESS_DRAIN_TIMEOUT: fc.constantFrom('25s', '0', '1m30s'),
    EGRESS_DNS_MIN_TTL: fc.constantFrom('2s', '10m'),
    EGRESS_MACVLAN_MAC: fc.constantFrom('stable', 'random', '02:00:5e:10:00:01'),
    EGRESS_ROUTER_DEBUG: fc.constantFrom('', '1', 'false')
  }
  const names = VARIABLES.map(v => v.name)
  const value = (name: string): fc.Arbitrary<string> => {
    const valid = validValues[name] ?? fc.constantFrom('', 'x')
    return fc.oneof(valid, mutated(valid), noise)
  }
  const settings: fc.Arbitrary<RawSettings> = fc.uniqueArray(fc.constantFrom(...names), { maxLength: names.length })
    .chain(keys => fc.tuple(...keys.map(k => value(k).map(v => [k, v] as const))))
    .map(entries => Object.fromEntries(entries))
  fc.assert(fc.property(settings, raw => {
    const r = parseConfig(raw)
    if (!r.ok) {
      const maxLines = Math.max(1, ...Object.values(raw).map(v => (v ?? '').split('\n').length))
      return cleanIssues(r.issues, maxLines) && !r.issues.some(i => i.message.startsWith('internal error'))
    }
    const c = r.config
    const targets = [
      ...(c.redirect?.rules.map(x => x.target) ?? []),
      ...(c.redirect?.fallback != null ? [c.redirect.fallback.target] : []),
      ...(c.dnsProxy?.forwards.flatMap(f => f.target.kind === 'ip' ? [f.target.address] : []) ?? [])
    ]
    return Object.isFrozen(c) && Object.isFrozen(c.dns) && c.gateway.family === c.source.family &&
      targets.every(x => x.family === c.source.family) &&
      (c.mode === 'http-proxy') === (c.httpProxy !== null) && (c.mode === 'dns-proxy') === (c.dnsProxy !== null)
  }), { numRuns: 2000 })
})
