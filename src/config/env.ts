/**
 * The variables egress-router reads, and how flags, environment and `_FILE` variables combine into
 * RawSettings. Pure apart from the injected readFile: the cli is the only caller that hands in
 * process.env and the real file system.
 */
import type { ConfigIssue } from '../errors.js'
import type { RawSettings } from './types.js'

export interface VariableSpec {
  /** the environment variable, e.g. `EGRESS_SOURCE` */
  readonly name: string
  /** commander option text: kebab-case of the name minus `EGRESS_`, with its argument */
  readonly flag: string
  readonly description: string
  /** the default as text, for --help; parseConfig applies it */
  readonly default?: string
  /** on a `_FILE` variable: the variable whose value the file holds */
  readonly file?: string
}

function v (name: string, arg: string, description: string, extra: { default?: string, file?: string } = {}): VariableSpec {
  const flag = `--${name.replace(/^EGRESS_/, '').toLowerCase().replaceAll('_', '-')} ${arg}`
  return Object.freeze({ name, flag, description, ...extra })
}

/** Every variable of SPEC.md's Environment table, in that order. */
export const VARIABLES: readonly VariableSpec[] = Object.freeze([
  v('EGRESS_ROUTER_MODE', '<mode>', 'init, legacy (= redirect), redirect, http-proxy, dns-proxy or unit-test', { default: 'legacy' }),
  v('EGRESS_SOURCE', '<ip[/prefix]>', 'the reserved source address, optionally with the prefix of the macvlan network (IPv4 or IPv6)'),
  v('EGRESS_GATEWAY', '<ip>', 'next hop on the macvlan network'),
  v('EGRESS_DESTINATION', '<rules>', 'redirect rules, one per line: <localport> <tcp|udp> <ip> [<remoteport>], or <ip> alone as the last rule'),
  v('EGRESS_DESTINATION_FILE', '<path>', 'read EGRESS_DESTINATION from this file (re-read on SIGHUP)', { file: 'EGRESS_DESTINATION' }),
  v('EGRESS_HTTP_PROXY_DESTINATION', '<rules>', 'http-proxy ACL, one rule per line: host, *.domain, ip, cidr, !rule, * last'),
  v('EGRESS_HTTP_PROXY_DESTINATION_FILE', '<path>', 'read EGRESS_HTTP_PROXY_DESTINATION from this file (re-read on SIGHUP)', { file: 'EGRESS_HTTP_PROXY_DESTINATION' }),
  v('EGRESS_DNS_PROXY_DESTINATION', '<forwards>', 'dns-proxy forwards, one per line: <port> <ip-or-hostname> [<targetport>]'),
  v('EGRESS_DNS_PROXY_DESTINATION_FILE', '<path>', 'read EGRESS_DNS_PROXY_DESTINATION from this file (re-read on SIGHUP)', { file: 'EGRESS_DNS_PROXY_DESTINATION' }),
  v('EGRESS_DNS_PROXY_FORWARDING', '<proxy|kernel>', 'who relays the dns-proxy forwards: proxy = the process accepts and connects; kernel = DNAT rules, as redirect mode, a host name\'s rule following its resolved addresses (no per-connection metrics or address retry; EGRESS_WORKERS does not apply)', { default: 'proxy' }),
  v('EGRESS_INTERFACE', '<link>', "parent NIC for the macvlan (default: the default route's link)"),
  v('EGRESS_MACVLAN_NAME', '<name>', 'name of the macvlan link; an existing link of that name is adopted', { default: 'macvlan0' }),
  v('EGRESS_MACVLAN_MODE', '<mode>', 'macvlan mode: bridge, private, vepa or passthru', { default: 'bridge' }),
  v('EGRESS_MACVLAN_MAC', '<mac|random|stable>', 'MAC of a created macvlan; stable = locally administered, derived from EGRESS_SOURCE', { default: 'stable' }),
  v('EGRESS_POD_INTERFACE', '<link>', 'where clients come in', { default: 'eth0' }),
  v('EGRESS_ROUTING', '<pod|host>', "pod: default route via the gateway; host: policy routing only, the host's default route untouched", { default: 'pod' }),
  v('EGRESS_HTTP_PROXY_PORT', '<port>', 'http-proxy listen port', { default: '8080' }),
  v('EGRESS_HTTP_PROXY_CONNECT_PORTS', '<ports|*>', 'ports CONNECT may reach, e.g. 443,8443; * = any', { default: '*' }),
  v('EGRESS_HTTP_PROXY_ACCESS_LOG', '<on|off>', 'on: one info line per allowed request or tunnel (client, target, address, rule); off: allowed ones are only counted. Denials are always logged', { default: 'on' }),
  v('EGRESS_HTTP_PROXY_CLIENTS', '<cidrs>', 'client networks allowed to use the proxy, comma separated (default: any on the pod side)'),
  v('EGRESS_HEALTH_ADDRESS', '<[host]:port>', 'listener for /healthz, /readyz and /metrics; empty turns it off', { default: ':9090' }),
  v('EGRESS_WORKERS', '<n|auto>', 'proxy modes: processes that accept and relay connections (node:cluster); auto = one per available CPU. Redirect mode relays in the kernel', { default: '1' }),
  v('EGRESS_DRAIN_TIMEOUT', '<duration>', 'how long SIGTERM lets connections in flight finish', { default: '25s' }),
  v('EGRESS_DNS_MIN_TTL', '<duration>', 'lower clamp on answer TTLs', { default: '2s' }),
  v('EGRESS_DNS_MAX_TTL', '<duration>', 'upper clamp on answer TTLs', { default: '300s' }),
  v('EGRESS_DNS_MAX_STALE', '<duration>', 'how long the last good answer is served while every nameserver fails', { default: '24h' }),
  v('EGRESS_ROUTER_DEBUG', '[on]', 'non-empty turns on debug logging (as the old router; 0, false, no, off do not)'),
  v('EGRESS_DNS_PROXY_DEBUG', '[on]', 'non-empty turns on debug logging (as the old dns-proxy; 0, false, no, off do not)'),
  v('EGRESS_LOG_LEVEL', '<level>', 'trace, debug, info, warn, error, fatal or silent', { default: 'info' })
])

/**
 * Flags override the environment (both keyed by variable name; undefined = not given). For each
 * `X_FILE` that is set (non-empty), the file's content is stored under X and the path stays under
 * X_FILE. Setting both X and X_FILE is an issue, as is a file that cannot be read. Every problem is
 * collected; settings are returned only when there is none.
 */
export function readRawSettings (
  env: Record<string, string | undefined>,
  flags: Record<string, string | undefined>,
  readFile: (path: string) => string
): { settings: RawSettings } | { issues: ConfigIssue[] } {
  const settings: Record<string, string | undefined> = {}
  for (const { name } of VARIABLES) {
    const value = flags[name] !== undefined ? flags[name] : env[name]
    if (value !== undefined) settings[name] = value
  }
  const issues: ConfigIssue[] = []
  for (const { name: fileVariable, file: target } of VARIABLES) {
    if (target === undefined) continue
    const path = settings[fileVariable]
    if (path === undefined || path === '') { delete settings[fileVariable]; continue }
    const inline = settings[target]
    if (inline !== undefined && inline !== '') {
      issues.push({ variable: fileVariable, line: 0, text: path, message: `set either ${target} or ${fileVariable}, not both` })
      continue
    }
    try {
      settings[target] = readFile(path)
    } catch (err) {
      const why = err instanceof Error ? err.message : String(err)
      issues.push({ variable: fileVariable, line: 0, text: path, message: `cannot read the file: ${why}` })
    }
  }
  if (issues.length > 0) return { issues }
  return { settings: Object.freeze(settings) }
}
