import t from 'tap'
import { formatIssue } from '../../../src/errors.js'
import { parseDnsForwards } from '../../../src/config/dns-forwards.js'

function errors (text: string, family: 4 | 6 | null = 4): string[] {
  const r = parseDnsForwards(text, { family })
  if (r.ok) throw new Error(`expected issues for ${JSON.stringify(text)}`)
  return r.issues.map(formatIssue)
}

t.test('addresses and names, with and without a target port', async t => {
  const r = parseDnsForwards('# dns\n80 11.12.13.14\n8080 21.22.23.24 100\n  9000  Foo.Example.COM.  \n9001 bar.com 53', { family: 4 })
  t.same(r, {
    ok: true,
    value: [
      { line: 2, port: 80, target: { kind: 'ip', address: { address: '11.12.13.14', family: 4 } }, targetPort: 80 },
      { line: 3, port: 8080, target: { kind: 'ip', address: { address: '21.22.23.24', family: 4 } }, targetPort: 100 },
      { line: 4, port: 9000, target: { kind: 'name', name: 'foo.example.com' }, targetPort: 9000 },
      { line: 5, port: 9001, target: { kind: 'name', name: 'bar.com' }, targetPort: 53 }
    ]
  })
})

t.test('IPv6 targets (beyond the old image)', async t => {
  const r = parseDnsForwards('53 2001:DB8::53', { family: 6 })
  t.same(r, { ok: true, value: [{ line: 1, port: 53, target: { kind: 'ip', address: { address: '2001:db8::53', family: 6 } }, targetPort: 53 }] })
})

t.test('only comments: no forwards', async t => {
  t.same(parseDnsForwards('# later\n', { family: 4 }), { ok: true, value: [] })
})

t.test('every error path, with the exact line', async t => {
  const cases: Array<[string, string]> = [
    ['invalid', "EGRESS_DNS_PROXY_DESTINATION line 1: 'invalid': expected '<port> <ip-or-hostname> [<targetport>]'"],
    ['8080 invalid', "EGRESS_DNS_PROXY_DESTINATION line 1: '8080 invalid': invalid is not an IP address, and a host name must contain a dot"],
    ['99999 11.12.13.14', "EGRESS_DNS_PROXY_DESTINATION line 1: '99999 11.12.13.14': port must be a number from 1 to 65535"],
    ['80 11.12.13.14 88888', "EGRESS_DNS_PROXY_DESTINATION line 1: '80 11.12.13.14 88888': target port must be a number from 1 to 65535"],
    ['80 999.1.1.1', "EGRESS_DNS_PROXY_DESTINATION line 1: '80 999.1.1.1': 999.1.1.1 is not a valid IPv4 address"],
    ['80 2001:db8::1', "EGRESS_DNS_PROXY_DESTINATION line 1: '80 2001:db8::1': 2001:db8::1 is IPv6, but EGRESS_SOURCE is IPv4"],
    ['80 2001:db8:::1', "EGRESS_DNS_PROXY_DESTINATION line 1: '80 2001:db8:::1': 2001:db8:::1 is not a valid IPv4 or IPv6 address"],
    ['80 0.0.0.0', "EGRESS_DNS_PROXY_DESTINATION line 1: '80 0.0.0.0': 0.0.0.0 is the unspecified address; it cannot be a destination"],
    ['80 ex_ample.com', "EGRESS_DNS_PROXY_DESTINATION line 1: '80 ex_ample.com': ex_ample.com is not a valid IP address or host name"],
    ['80 tcp 11.12.13.14 53', "EGRESS_DNS_PROXY_DESTINATION line 1: '80 tcp 11.12.13.14 53': expected '<port> <ip-or-hostname> [<targetport>]'"],
    ['80 11.12.13.14 # dns', "EGRESS_DNS_PROXY_DESTINATION line 1: '80 11.12.13.14 # dns': a comment must be on a line of its own (a line starting with #)"],
    ['80\t11.12.13.14', "EGRESS_DNS_PROXY_DESTINATION line 1: '80\t11.12.13.14': fields must be separated by spaces, not tabs"],
    ['80 11.12.13.14\r', "EGRESS_DNS_PROXY_DESTINATION line 1: '80 11.12.13.14': contains a carriage return (Windows line ending); save the text with Unix (LF) line endings"]
  ]
  for (const [text, line] of cases) t.same(errors(text), [line], JSON.stringify(text))
})

t.test('ports are unique; every problem is collected', async t => {
  t.same(errors('80 11.12.13.14\n80 21.22.23.24 100\nbad\n8080 invalid'), [
    "EGRESS_DNS_PROXY_DESTINATION line 2: '80 21.22.23.24 100': port 80 is already used on line 1",
    "EGRESS_DNS_PROXY_DESTINATION line 3: 'bad': expected '<port> <ip-or-hostname> [<targetport>]'",
    "EGRESS_DNS_PROXY_DESTINATION line 4: '8080 invalid': invalid is not an IP address, and a host name must contain a dot"
  ])
})
