import t from 'tap'
import { formatIssue } from '../../../src/errors.js'
import { parseDestination, ruleLines } from '../../../src/config/destination.js'

const v4 = { family: 4 } as const

/** the formatted issue lines, or the rules */
function errors (text: string, family: 4 | 6 | null = 4): string[] {
  const r = parseDestination(text, { family })
  if (r.ok) throw new Error(`expected issues for ${JSON.stringify(text)}`)
  return r.issues.map(formatIssue)
}

t.test('the three rule forms', async t => {
  const r = parseDestination('80 tcp 10.4.5.6\n8080 udp 10.7.8.9 80\n10.1.2.3', v4)
  t.same(r, {
    ok: true,
    value: {
      rules: [
        { kind: 'port', line: 1, protocol: 'tcp', port: 80, target: { address: '10.4.5.6', family: 4 }, targetPort: 80, targetPortGiven: false },
        { kind: 'port', line: 2, protocol: 'udp', port: 8080, target: { address: '10.7.8.9', family: 4 }, targetPort: 80, targetPortGiven: true }
      ],
      fallback: { kind: 'fallback', line: 3, target: { address: '10.1.2.3', family: 4 } }
    }
  })
})

t.test('a single IP alone is the whole config', async t => {
  t.same(parseDestination('10.1.2.3', v4), { ok: true, value: { rules: [], fallback: { kind: 'fallback', line: 1, target: { address: '10.1.2.3', family: 4 } } } })
})

t.test('blank lines, comments and surrounding whitespace are ignored; line numbers count them', async t => {
  const r = parseDestination('\n# comment\n   \t\n  80   tcp   10.4.5.6  \n\t# indented comment\n\r\n#x\r\n\t10.1.2.3\t\n# after the fallback\n\n', v4)
  t.same(r, {
    ok: true,
    value: {
      rules: [{ kind: 'port', line: 4, protocol: 'tcp', port: 80, target: { address: '10.4.5.6', family: 4 }, targetPort: 80, targetPortGiven: false }],
      fallback: { kind: 'fallback', line: 8, target: { address: '10.1.2.3', family: 4 } }
    }
  })
})

t.test('only comments: no redirects (the old router printed only the SNAT rule)', async t => {
  t.same(parseDestination('# nothing yet\n', v4), { ok: true, value: { rules: [], fallback: null } })
})

t.test('IPv6 targets are canonicalised (a deliberate difference)', async t => {
  const r = parseDestination('443 tcp 2001:DB8::0:1 8443\n2001:db8::2', { family: 6 })
  t.same(r, {
    ok: true,
    value: {
      rules: [{ kind: 'port', line: 1, protocol: 'tcp', port: 443, target: { address: '2001:db8::1', family: 6 }, targetPort: 8443, targetPortGiven: true }],
      fallback: { kind: 'fallback', line: 2, target: { address: '2001:db8::2', family: 6 } }
    }
  })
})

t.test('the same local port once for tcp and once for udp (a deliberate difference)', async t => {
  const r = parseDestination('53 tcp 10.0.0.53\n53 udp 10.0.0.53', v4)
  t.ok(r.ok)
  t.same(errors('53 tcp 10.0.0.53\n53 udp 10.0.0.53\n53 tcp 10.0.0.54 5353'), [
    "EGRESS_DESTINATION line 3: '53 tcp 10.0.0.54 5353': local port 53/tcp is already used on line 1"
  ])
})

t.test('every error path, with the exact line', async t => {
  const cases: Array<[string, string]> = [
    ['80 sctp 10.4.5.6', "EGRESS_DESTINATION line 1: '80 sctp 10.4.5.6': protocol must be tcp or udp"],
    ['80 TCP 10.4.5.6', "EGRESS_DESTINATION line 1: '80 TCP 10.4.5.6': protocol must be tcp or udp"],
    ['800000 tcp 10.4.5.6', "EGRESS_DESTINATION line 1: '800000 tcp 10.4.5.6': local port must be a number from 1 to 65535"],
    ['0 tcp 10.4.5.6', "EGRESS_DESTINATION line 1: '0 tcp 10.4.5.6': local port must be a number from 1 to 65535"],
    ['080 tcp 10.4.5.6', "EGRESS_DESTINATION line 1: '080 tcp 10.4.5.6': local port must be a number from 1 to 65535"],
    ['80 tcp 10.4.5.6 0', "EGRESS_DESTINATION line 1: '80 tcp 10.4.5.6 0': remote port must be a number from 1 to 65535"],
    ['80 tcp 10.4.5.6 65536', "EGRESS_DESTINATION line 1: '80 tcp 10.4.5.6 65536': remote port must be a number from 1 to 65535"],
    ['80 tcp 999.1.1.1', "EGRESS_DESTINATION line 1: '80 tcp 999.1.1.1': 999.1.1.1 is not a valid IPv4 or IPv6 address"],
    ['999.1.1.1', "EGRESS_DESTINATION line 1: '999.1.1.1': 999.1.1.1 is not a valid IPv4 or IPv6 address"],
    ['010.1.1.1', "EGRESS_DESTINATION line 1: '010.1.1.1': 010.1.1.1 is not a valid IPv4 or IPv6 address"],
    ['10.1.2.3/24', "EGRESS_DESTINATION line 1: '10.1.2.3/24': 10.1.2.3/24 is not a valid IPv4 or IPv6 address"],
    ['invalid', "EGRESS_DESTINATION line 1: 'invalid': invalid is not a valid IPv4 or IPv6 address"],
    ['80', "EGRESS_DESTINATION line 1: '80': expected '<localport> <tcp|udp> <ip> [<remoteport>]', or '<ip>' alone as the last rule (fallback)"],
    ['80 tcp', "EGRESS_DESTINATION line 1: '80 tcp': expected '<localport> <tcp|udp> <ip> [<remoteport>]', or '<ip>' alone as the last rule (fallback)"],
    ['80 tcp 10.4.5.6 80 extra', "EGRESS_DESTINATION line 1: '80 tcp 10.4.5.6 80 extra': expected '<localport> <tcp|udp> <ip> [<remoteport>]', or '<ip>' alone as the last rule (fallback)"],
    ['80 tcp 0.0.0.0', "EGRESS_DESTINATION line 1: '80 tcp 0.0.0.0': 0.0.0.0 is the unspecified address; it cannot be a destination"],
    ['224.0.0.1', "EGRESS_DESTINATION line 1: '224.0.0.1': 224.0.0.1 is a multicast address; it cannot be a destination"],
    ['80 tcp fe80::1%eth0', "EGRESS_DESTINATION line 1: '80 tcp fe80::1%eth0': fe80::1%eth0 has a zone index; zones are not supported here"],
    ['80 tcp 2001:db8::1', "EGRESS_DESTINATION line 1: '80 tcp 2001:db8::1': 2001:db8::1 is IPv6, but EGRESS_SOURCE is IPv4"],
    ['80 tcp 10.4.5.6 # web', "EGRESS_DESTINATION line 1: '80 tcp 10.4.5.6 # web': a comment must be on a line of its own (a line starting with #)"],
    ['80\ttcp\t10.4.5.6', "EGRESS_DESTINATION line 1: '80\ttcp\t10.4.5.6': fields must be separated by spaces, not tabs"],
    ['80 tcp 10.4.5.6\r\n10.1.2.3\r\n', "EGRESS_DESTINATION line 1: '80 tcp 10.4.5.6': contains a carriage return (Windows line ending); save the text with Unix (LF) line endings"],
    ['80 tcp 10.4.5.6\\', "EGRESS_DESTINATION line 1: '80 tcp 10.4.5.6\\': 10.4.5.6\\ is not a valid IPv4 or IPv6 address"]
  ]
  for (const [text, line] of cases) {
    const got = errors(text)
    t.same(got.slice(0, 1), [line], JSON.stringify(text))
  }
})

t.test('CRLF: every rule line is reported, blank and comment lines pass as the old script let them', async t => {
  t.same(errors('# rules\r\n80 tcp 10.4.5.6\r\n\r\n10.1.2.3\r\n'), [
    "EGRESS_DESTINATION line 2: '80 tcp 10.4.5.6': contains a carriage return (Windows line ending); save the text with Unix (LF) line endings",
    "EGRESS_DESTINATION line 4: '10.1.2.3': contains a carriage return (Windows line ending); save the text with Unix (LF) line endings"
  ])
})

t.test('the fallback must be the last rule; everything after it is reported', async t => {
  t.same(errors('10.1.2.3\n80 tcp 10.4.5.6\n# fine\n10.4.5.6'), [
    "EGRESS_DESTINATION line 2: '80 tcp 10.4.5.6': the fallback '10.1.2.3' on line 1 must be the last rule",
    "EGRESS_DESTINATION line 4: '10.4.5.6': the fallback '10.1.2.3' on line 1 must be the last rule"
  ])
})

t.test('every problem of every line is collected at once', async t => {
  t.same(errors('80 sctp 10.4.5.6\n80 tcp 10.4.5.6\n\n80 tcp 10.4.5.7\nbogus\n70000 udp 10.1.1.1'), [
    "EGRESS_DESTINATION line 1: '80 sctp 10.4.5.6': protocol must be tcp or udp",
    "EGRESS_DESTINATION line 4: '80 tcp 10.4.5.7': local port 80/tcp is already used on line 2",
    "EGRESS_DESTINATION line 5: 'bogus': bogus is not a valid IPv4 or IPv6 address",
    "EGRESS_DESTINATION line 6: '70000 udp 10.1.1.1': local port must be a number from 1 to 65535"
  ])
})

t.test('family null skips the family check; the variable name can be given', async t => {
  t.ok(parseDestination('80 tcp 2001:db8::1\n10.1.2.3', { family: null }).ok)
  const r = parseDestination('x', { family: 4, variable: 'EGRESS_DESTINATION_FILE' })
  t.same(r.ok ? [] : r.issues.map(i => i.variable), ['EGRESS_DESTINATION_FILE'])
})

t.test('ruleLines keeps meaningful lines with their numbers', async t => {
  t.same(ruleLines('a\n\n# c\n  b  ', 'X'), { lines: [{ line: 1, text: 'a' }, { line: 4, text: 'b' }], issues: [] })
})
