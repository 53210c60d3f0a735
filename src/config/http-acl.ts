/**
 * EGRESS_HTTP_PROXY_DESTINATION, the http-proxy ACL: one rule per line, first match wins.
 *
 *   host.example.com     that host            *.example.com   example.com and every subdomain
 *   192.0.2.7            that address         192.0.2.0/24    that network (also IPv6)
 *   !<rule>              deny instead of allow
 *   *                    everything; must be the last rule
 * Without a final `*`, anything unmatched is denied.
 *
 * Compared with openshift/origin images/egress/http-proxy/egress-http-proxy.sh (which wrote a squid
 * config):
 *   - same line discipline as the other grammars (see ruleLines);
 *   - its blank-line test was `^\w*$`, so a one-word allow rule (`intranet`) was silently skipped,
 *     while `!intranet` was a deny rule. Here a one-word host name is a host rule either way: the
 *     rule means what it says;
 *   - its address pattern (`[[:xdigit:].:]*[.:][[:xdigit:].:]+`) let malformed addresses through to
 *     squid (`1.2.3.999`), and read hex-looking names (`cafe.be`) as addresses. Here anything that
 *     parses as an address or CIDR is one, a name is a name, and malformed addresses are rejected;
 *   - host bits of a CIDR are cleared (`192.0.2.7/24` is the network 192.0.2.0/24), as squid did;
 *   - `!*` was rejected (`Bad destination`) and still is; several `*` lines at the end were accepted
 *     and still are.
 */
import type { ConfigIssue } from '../errors.js'
import { parseCidr, parseHostname, parseIp } from './addr.js'
import { type GrammarResult, ruleLines } from './destination.js'
import type { AclMatch, AclRule } from './types.js'

type MatchResult = { ok: true, match: AclMatch } | { ok: false, message: string }

function parseMatch (text: string): MatchResult {
  if (text === '*') return { ok: false, message: "'*' cannot be negated; anything no rule allows is denied already" }
  // an address or network: anything with ':' or '/', or that parses as an address
  if (text.includes(':') || text.includes('/') || parseIp(text).ok) {
    const cidr = parseCidr(text, { hostBits: 'normalise' })
    return cidr.ok ? { ok: true, match: { kind: 'cidr', cidr: cidr.value } } : { ok: false, message: cidr.message }
  }
  if (text === '*.') return { ok: false, message: "'*.' must be followed by a domain, as in *.example.com" }
  if (text.startsWith('*.')) {
    const domain = parseHostname(text.slice(2), { requireDot: false })
    return domain.ok ? { ok: true, match: { kind: 'domain', domain: domain.value } } : { ok: false, message: domain.message }
  }
  const name = parseHostname(text, { requireDot: false })
  if (!name.ok) {
    if (text.includes('*')) return { ok: false, message: `${text}: a wildcard is only allowed as '*.domain' or '*' alone` }
    if (text.includes(' ')) return { ok: false, message: 'one destination per line: a host name, *.domain, an address or a network' }
    return { ok: false, message: name.message }
  }
  return { ok: true, match: { kind: 'host', name: name.value } }
}

/** EGRESS_HTTP_PROXY_DESTINATION text → the ACL rules in order, or every problem in it. */
export function parseHttpAcl (value: string, variable = 'EGRESS_HTTP_PROXY_DESTINATION'): GrammarResult<AclRule[]> {
  const { lines, issues } = ruleLines(value, variable)
  const rules: AclRule[] = []
  let wildcardLine = 0
  for (const { line, text } of lines) {
    const issue = (message: string): void => { issues.push({ variable, line, text, message } satisfies ConfigIssue) }
    if (text === '*') {
      wildcardLine = line
      rules.push({ line, text, action: 'allow', match: { kind: 'any' } })
      continue
    }
    if (wildcardLine !== 0) {
      issue(`'*' on line ${wildcardLine} allows everything and must be the last rule`)
      continue
    }
    const deny = text.startsWith('!')
    const body = deny ? text.slice(1) : text
    if (body === '') { issue("'!' must be followed by the destination to deny"); continue }
    const match = parseMatch(body)
    if (!match.ok) { issue(match.message); continue }
    rules.push({ line, text, action: deny ? 'deny' : 'allow', match: match.match })
  }
  issues.sort((a, b) => a.line - b.line)
  if (issues.length > 0) return { ok: false, issues }
  return { ok: true, value: rules }
}
