import t from 'tap'
import { formatIssue } from '../../../src/errors.js'
import { parseHttpAcl } from '../../../src/config/http-acl.js'

function errors (text: string): string[] {
  const r = parseHttpAcl(text)
  if (r.ok) throw new Error(`expected issues for ${JSON.stringify(text)}`)
  return r.issues.map(formatIssue)
}

t.test('every rule form, in order, with line numbers and the text as written', async t => {
  const r = parseHttpAcl('# acl\nHost.Example.com.\n*.Example.net\n!*.bad.example.com\n192.0.2.7\n192.0.2.9/24\n!2001:DB8::/32\nfe80::/10\nintranet\n!intranet2\n*')
  t.same(r, {
    ok: true,
    value: [
      { line: 2, text: 'Host.Example.com.', action: 'allow', match: { kind: 'host', name: 'host.example.com' } },
      { line: 3, text: '*.Example.net', action: 'allow', match: { kind: 'domain', domain: 'example.net' } },
      { line: 4, text: '!*.bad.example.com', action: 'deny', match: { kind: 'domain', domain: 'bad.example.com' } },
      { line: 5, text: '192.0.2.7', action: 'allow', match: { kind: 'cidr', cidr: { address: '192.0.2.7', family: 4, prefix: 32 } } },
      { line: 6, text: '192.0.2.9/24', action: 'allow', match: { kind: 'cidr', cidr: { address: '192.0.2.0', family: 4, prefix: 24 } } },
      { line: 7, text: '!2001:DB8::/32', action: 'deny', match: { kind: 'cidr', cidr: { address: '2001:db8::', family: 6, prefix: 32 } } },
      { line: 8, text: 'fe80::/10', action: 'allow', match: { kind: 'cidr', cidr: { address: 'fe80::', family: 6, prefix: 10 } } },
      { line: 9, text: 'intranet', action: 'allow', match: { kind: 'host', name: 'intranet' } },
      { line: 10, text: '!intranet2', action: 'deny', match: { kind: 'host', name: 'intranet2' } },
      { line: 11, text: '*', action: 'allow', match: { kind: 'any' } }
    ]
  })
})

t.test('hex-looking names are names, not addresses', async t => {
  const r = parseHttpAcl('cafe.be')
  t.same(r, { ok: true, value: [{ line: 1, text: 'cafe.be', action: 'allow', match: { kind: 'host', name: 'cafe.be' } }] })
})

t.test('only comments: an empty ACL (everything denied), as the old image', async t => {
  t.same(parseHttpAcl('# nothing\n\n'), { ok: true, value: [] })
})

t.test('several * at the end are accepted, as the old image did', async t => {
  const r = parseHttpAcl('*\n*')
  t.same(r.ok ? r.value.map(x => x.match.kind) : null, ['any', 'any'])
})

t.test('every error path, with the exact line', async t => {
  const cases: Array<[string, string]> = [
    ['foo bar', "EGRESS_HTTP_PROXY_DESTINATION line 1: 'foo bar': one destination per line: a host name, *.domain, an address or a network"],
    ['*\nexample.com', "EGRESS_HTTP_PROXY_DESTINATION line 2: 'example.com': '*' on line 1 allows everything and must be the last rule"],
    ['!*', "EGRESS_HTTP_PROXY_DESTINATION line 1: '!*': '*' cannot be negated; anything no rule allows is denied already"],
    ['!', "EGRESS_HTTP_PROXY_DESTINATION line 1: '!': '!' must be followed by the destination to deny"],
    ['!!example.com', "EGRESS_HTTP_PROXY_DESTINATION line 1: '!!example.com': !example.com is not a valid IP address or host name"],
    ['! example.com', "EGRESS_HTTP_PROXY_DESTINATION line 1: '! example.com': one destination per line: a host name, *.domain, an address or a network"],
    ['foo.*.com', "EGRESS_HTTP_PROXY_DESTINATION line 1: 'foo.*.com': foo.*.com: a wildcard is only allowed as '*.domain' or '*' alone"],
    ['*example.com', "EGRESS_HTTP_PROXY_DESTINATION line 1: '*example.com': *example.com: a wildcard is only allowed as '*.domain' or '*' alone"],
    ['*.', "EGRESS_HTTP_PROXY_DESTINATION line 1: '*.': '*.' must be followed by a domain, as in *.example.com"],
    ['*.a..b', "EGRESS_HTTP_PROXY_DESTINATION line 1: '*.a..b': a..b is not a valid IP address or host name"],
    ['1.2.3.999', "EGRESS_HTTP_PROXY_DESTINATION line 1: '1.2.3.999': 1.2.3.999 is not a valid IPv4 address"],
    ['192.0.2.0/33', "EGRESS_HTTP_PROXY_DESTINATION line 1: '192.0.2.0/33': prefix length must be a number from 0 to 32"],
    ['2001:db8::g/32', "EGRESS_HTTP_PROXY_DESTINATION line 1: '2001:db8::g/32': 2001:db8::g is not a valid IPv4 or IPv6 address"],
    ['example.com/24', "EGRESS_HTTP_PROXY_DESTINATION line 1: 'example.com/24': example.com is not a valid IPv4 or IPv6 address"],
    ['exa_mple.com', "EGRESS_HTTP_PROXY_DESTINATION line 1: 'exa_mple.com': exa_mple.com is not a valid IP address or host name"],
    ['example.com # ok', "EGRESS_HTTP_PROXY_DESTINATION line 1: 'example.com # ok': a comment must be on a line of its own (a line starting with #)"],
    ['example.com\r\n', "EGRESS_HTTP_PROXY_DESTINATION line 1: 'example.com': contains a carriage return (Windows line ending); save the text with Unix (LF) line endings"],
    ['example.com\tfoo', "EGRESS_HTTP_PROXY_DESTINATION line 1: 'example.com\tfoo': fields must be separated by spaces, not tabs"]
  ]
  for (const [text, line] of cases) t.same(errors(text), [line], JSON.stringify(text))
})

t.test('every problem of every line is collected at once', async t => {
  t.same(errors('foo bar\nok.example.com\n1.2.3.999\n*\n!x.example.com'), [
    "EGRESS_HTTP_PROXY_DESTINATION line 1: 'foo bar': one destination per line: a host name, *.domain, an address or a network",
    "EGRESS_HTTP_PROXY_DESTINATION line 3: '1.2.3.999': 1.2.3.999 is not a valid IPv4 address",
    "EGRESS_HTTP_PROXY_DESTINATION line 5: '!x.example.com': '*' on line 4 allows everything and must be the last rule"
  ])
})
