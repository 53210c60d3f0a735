/**
 * EGRESS_DNS_PROXY_DESTINATION, the dns-proxy forwards: `<port> <ip-or-hostname> [<targetport>]`,
 * the target port defaulting to the port.
 *
 * Accepts what openshift/origin images/egress/dns-proxy/egress-dns-proxy.sh accepts, with the same
 * meaning: same line discipline (see ruleLines), fields separated by spaces, ports 1–65535 and
 * unique, a host name must contain a dot (`8080 invalid` is rejected). Beyond it, as for
 * EGRESS_DESTINATION: IPv6 targets are accepted; malformed addresses (`999.1.1.1`, which its
 * host-name pattern would even have taken for a name) and ports with leading zeros are rejected.
 */
import { parseHostname, parseIp, parsePort } from './addr.js'
import { type GrammarResult, ruleLines, targetProblem } from './destination.js'
import type { DnsForward, DnsProxyConfig, Family, ForwardTarget } from './types.js'

export interface DnsForwardOptions {
  /** the family of EGRESS_SOURCE; address targets of the other family cannot be reached */
  readonly family: Family | null
  readonly variable?: string
}

const USAGE = "expected '<port> <ip-or-hostname> [<targetport>]'"

type LineResult = { ok: true, forward: DnsForward } | { ok: false, message: string }

function parseTarget (text: string, family: Family | null): { ok: true, target: ForwardTarget } | { ok: false, message: string } {
  const ip = parseIp(text)
  if (ip.ok) {
    const problem = targetProblem(ip.value, family)
    return problem === null ? { ok: true, target: { kind: 'ip', address: ip.value } } : { ok: false, message: problem }
  }
  if (text.includes(':')) return { ok: false, message: ip.message }
  const name = parseHostname(text, { requireDot: true })
  return name.ok ? { ok: true, target: { kind: 'name', name: name.value } } : { ok: false, message: name.message }
}

function parseLine (line: number, text: string, family: Family | null): LineResult {
  const fields = text.split(/ +/)
  if (fields.length !== 2 && fields.length !== 3) return { ok: false, message: USAGE }
  const [portText, targetText, targetPortText] = fields as [string, string, string | undefined]
  const port = parsePort(portText)
  if (!port.ok) return { ok: false, message: port.message }
  const target = parseTarget(targetText, family)
  if (!target.ok) return { ok: false, message: target.message }
  let targetPort = port.value
  if (targetPortText !== undefined) {
    const parsed = parsePort(targetPortText)
    if (!parsed.ok) return { ok: false, message: `target ${parsed.message}` }
    targetPort = parsed.value
  }
  return { ok: true, forward: { line, port: port.value, target: target.target, targetPort } }
}

/** EGRESS_DNS_PROXY_DESTINATION text → the forwards in order, or every problem in it. */
export function parseDnsForwards (value: string, options: DnsForwardOptions): GrammarResult<DnsForward[]> {
  const variable = options.variable ?? 'EGRESS_DNS_PROXY_DESTINATION'
  const { lines, issues } = ruleLines(value, variable)
  const forwards: DnsForward[] = []
  const used = new Map<number, number>()
  for (const { line, text } of lines) {
    const parsed = parseLine(line, text, options.family)
    if (!parsed.ok) { issues.push({ variable, line, text, message: parsed.message }); continue }
    const first = used.get(parsed.forward.port)
    if (first !== undefined) {
      issues.push({ variable, line, text, message: `port ${parsed.forward.port} is already used on line ${first}` })
      continue
    }
    used.set(parsed.forward.port, line)
    forwards.push(parsed.forward)
  }
  issues.sort((a, b) => a.line - b.line)
  if (issues.length > 0) return { ok: false, issues }
  return { ok: true, value: forwards }
}

/** The forwards the process accepts and relays: every one under `proxy` forwarding, none under `kernel`. */
export function proxiedForwards (dns: DnsProxyConfig | null): readonly DnsForward[] {
  return dns === null || dns.forwarding === 'kernel' ? [] : dns.forwards
}

/**
 * The forwards the kernel relays: every one under `kernel` forwarding (DNAT rules, see plan/kernel-nat.ts), none
 * under `proxy`. A host-name target's rule follows the name's current addresses.
 */
export function kernelForwards (dns: DnsProxyConfig | null): readonly DnsForward[] {
  return dns?.forwarding === 'kernel' ? dns.forwards : []
}

/** The host names the kernel forwards follow, lower case, each once, in line order. */
export function kernelNames (dns: DnsProxyConfig | null): readonly string[] {
  const names = new Set<string>()
  for (const f of kernelForwards(dns)) if (f.target.kind === 'name') names.add(f.target.name.toLowerCase())
  return [...names]
}
