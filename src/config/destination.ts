/**
 * EGRESS_DESTINATION, the redirect rules — and the line discipline all three destination grammars
 * share (ruleLines), because the OpenShift scripts read all three the same way: `while read dest`.
 *
 *   <localport> <tcp|udp> <ip>               that port goes to the same port on ip
 *   <localport> <tcp|udp> <ip> <remoteport>  … to another port
 *   <ip>                                     fallback: everything else; at most one, the last rule
 *
 * Accepts what openshift/origin images/egress/router/egress-router.sh accepts, with the same
 * meaning, and rejects what it rejects, except SPEC.md's three deliberate differences:
 *   - a local port may be used once per protocol (`53 tcp …` next to `53 udp …`); the old script
 *     keyed its "already used" check on the port alone;
 *   - IPv6 addresses are accepted;
 *   - malformed addresses its regular expression let through (`999.1.1.1`, `010.1.1.1`) are
 *     rejected here instead of failing later in the kernel (or meaning octal).
 * Two more refusals of the same kind, for values that would have been accepted and then failed or
 * misbehaved: ports with leading zeros (bash read `010` as octal 8), and redirect targets that are
 * the unspecified or a multicast address.
 */
import type { ConfigIssue } from '../errors.js'
import { isMulticast, isUnspecified, parseIp, parsePort } from './addr.js'
import type { Family, FallbackRedirect, IpAddress, PortRedirect, Protocol, RedirectConfig } from './types.js'

export type GrammarResult<T> = { readonly ok: true, readonly value: T } | { readonly ok: false, readonly issues: ConfigIssue[] }

/** One meaningful line of a multi-line value: 1-based number in the original text, trimmed text. */
export interface RuleLine {
  readonly line: number
  readonly text: string
}

/**
 * Splits a multi-line value the way the OpenShift scripts' `while read dest` loop did:
 * - lines are separated by `\n`; line numbers count every line, blank and comment lines included;
 * - spaces and tabs around a line are ignored (bash `read` strips IFS whitespace);
 * - a line that is blank (only whitespace, `\r` included) or starts with `#` is skipped;
 * - on any other line a `\r` (a Windows line ending), a `#` (a trailing comment) or a tab between
 *   fields made the old line regex fail, so they are rejected — with a message that says what to fix
 *   instead of the old "value '…' is invalid".
 * Not emulated: `read` without -r joined a line ending in `\` with the next one and dropped other
 * backslashes; here a backslash is simply an invalid character.
 */
export function ruleLines (value: string, variable: string): { lines: RuleLine[], issues: ConfigIssue[] } {
  const lines: RuleLine[] = []
  const issues: ConfigIssue[] = []
  value.split('\n').forEach((raw, index) => {
    const line = index + 1
    const text = raw.replace(/^[ \t]+|[ \t]+$/g, '')
    if (/^[ \t\r\v\f]*$/.test(text) || text.startsWith('#')) return
    const shown = text.replace(/[\r]/g, '').replace(/[ \t]+$/, '')
    if (text.includes('\r')) {
      issues.push({ variable, line, text: shown, message: 'contains a carriage return (Windows line ending); save the text with Unix (LF) line endings' })
    } else if (text.includes('#')) {
      issues.push({ variable, line, text, message: 'a comment must be on a line of its own (a line starting with #)' })
    } else if (text.includes('\t')) {
      issues.push({ variable, line, text, message: 'fields must be separated by spaces, not tabs' })
    } else {
      lines.push({ line, text })
    }
  })
  return { lines, issues }
}

export interface DestinationOptions {
  /** the family of EGRESS_SOURCE; targets of the other family cannot be reached. null = not known */
  readonly family: Family | null
  readonly variable?: string
}

const USAGE = "expected '<localport> <tcp|udp> <ip> [<remoteport>]', or '<ip>' alone as the last rule (fallback)"

/** Why an address cannot be a redirect target, or null if it can. */
export function targetProblem (target: IpAddress, family: Family | null): string | null {
  if (isUnspecified(target)) return `${target.address} is the unspecified address; it cannot be a destination`
  if (isMulticast(target)) return `${target.address} is a multicast address; it cannot be a destination`
  if (family !== null && target.family !== family) {
    return `${target.address} is IPv${target.family}, but EGRESS_SOURCE is IPv${family}`
  }
  return null
}

type LineResult = { ok: true, rule: PortRedirect | FallbackRedirect } | { ok: false, message: string }

function parseLine (line: number, text: string, family: Family | null): LineResult {
  const fields = text.split(/ +/)
  if (fields.length === 1) {
    const ip = parseIp(fields[0]!)
    if (!ip.ok) return { ok: false, message: /^[0-9]+$/.test(text) ? USAGE : ip.message }
    const problem = targetProblem(ip.value, family)
    if (problem !== null) return { ok: false, message: problem }
    return { ok: true, rule: { kind: 'fallback', line, target: ip.value } }
  }
  if (fields.length !== 3 && fields.length !== 4) return { ok: false, message: USAGE }
  const [portText, protoText, ipText, remoteText] = fields as [string, string, string, string | undefined]
  const port = parsePort(portText)
  if (!port.ok) return { ok: false, message: `local ${port.message}` }
  if (protoText !== 'tcp' && protoText !== 'udp') return { ok: false, message: 'protocol must be tcp or udp' }
  const ip = parseIp(ipText)
  if (!ip.ok) return { ok: false, message: ip.message }
  const problem = targetProblem(ip.value, family)
  if (problem !== null) return { ok: false, message: problem }
  let targetPort = port.value
  if (remoteText !== undefined) {
    const remote = parsePort(remoteText)
    if (!remote.ok) return { ok: false, message: `remote ${remote.message}` }
    targetPort = remote.value
  }
  const protocol: Protocol = protoText
  return { ok: true, rule: { kind: 'port', line, protocol, port: port.value, target: ip.value, targetPort, targetPortGiven: remoteText !== undefined } }
}

/** EGRESS_DESTINATION text → the redirect rules, or every problem in it. */
export function parseDestination (value: string, options: DestinationOptions): GrammarResult<RedirectConfig> {
  const variable = options.variable ?? 'EGRESS_DESTINATION'
  const { lines, issues } = ruleLines(value, variable)
  const rules: PortRedirect[] = []
  let fallback: FallbackRedirect | null = null
  const used = new Map<string, number>()
  for (const { line, text } of lines) {
    const issue = (message: string): void => { issues.push({ variable, line, text, message }) }
    // as in the old script, anything after the fallback is refused, whatever it is
    if (fallback !== null) {
      issue(`the fallback '${fallback.target.address}' on line ${fallback.line} must be the last rule`)
      continue
    }
    const parsed = parseLine(line, text, options.family)
    if (!parsed.ok) { issue(parsed.message); continue }
    const rule = parsed.rule
    if (rule.kind === 'fallback') { fallback = rule; continue }
    const key = `${rule.port}/${rule.protocol}`
    const first = used.get(key)
    if (first !== undefined) {
      issue(`local port ${key} is already used on line ${first}`)
      continue
    }
    used.set(key, line)
    rules.push(rule)
  }
  issues.sort((a, b) => a.line - b.line)
  if (issues.length > 0) return { ok: false, issues }
  return { ok: true, value: { rules, fallback } }
}
