/**
 * RawSettings → Config, or every problem at once. Pure; never throws (a bug in here is caught and
 * reported as an issue rather than crash the cli with a stack trace).
 *
 * An unset variable and one set to the empty string are the same (a Kubernetes manifest often
 * carries `value: ""`), except EGRESS_HEALTH_ADDRESS, where empty turns the listener off.
 */
import type { ConfigIssue } from '../errors.js'
import { isMulticast, isUnspecified, parseCidr, parseHostname, parseIp, parseMac, parsePort } from './addr.js'
import { parseDestination } from './destination.js'
import { parseDnsForwards } from './dns-forwards.js'
import { parseDuration } from './duration.js'
import { VARIABLES } from './env.js'
import { parseHttpAcl } from './http-acl.js'
import type {
  Cidr, Config, DnsForwarding, DnsProxyConfig, Family, HttpProxyConfig, IpAddress, LogLevel, MacSetting, MacvlanMode, Mode,
  ModeName, RawSettings, RedirectConfig, Routing, SourceAddress
} from './types.js'

export type ParseConfigResult = { readonly ok: true, readonly config: Config } | { readonly ok: false, readonly issues: ConfigIssue[] }

const MODES: Readonly<Record<ModeName, Mode>> = {
  init: 'init',
  legacy: 'redirect',
  redirect: 'redirect',
  'http-proxy': 'http-proxy',
  'dns-proxy': 'dns-proxy',
  'unit-test': 'unit-test'
}
const MACVLAN_MODES: readonly MacvlanMode[] = ['bridge', 'private', 'vepa', 'passthru']
const ROUTINGS: readonly Routing[] = ['pod', 'host']
const LOG_LEVELS: readonly LogLevel[] = ['trace', 'debug', 'info', 'warn', 'error', 'fatal', 'silent']
/** the pino level numbers, to compare verbosity */
const LEVEL_RANK: Readonly<Record<LogLevel, number>> = { trace: 10, debug: 20, info: 30, warn: 40, error: 50, fatal: 60, silent: Infinity }

/** Collects issues for one parse; `get` reads a variable with unset and empty both meaning undefined. */
class Issues {
  readonly list: ConfigIssue[] = []
  add (variable: string, text: string, message: string, line = 0): void {
    // keep one problem on one output line even when a value spans several
    const oneLine = (s: string): string => s.replaceAll('\r', '\\r').replaceAll('\n', '\\n')
    this.list.push({ variable, line, text: oneLine(text), message: oneLine(message) })
  }
}

function get (raw: RawSettings, name: string): string | undefined {
  const value = raw[name]
  return value === undefined || value === '' ? undefined : value
}

function oneOf<T extends string> (raw: RawSettings, issues: Issues, name: string, allowed: readonly T[], fallback: T): T {
  const value = get(raw, name)
  if (value === undefined) return fallback
  if ((allowed as readonly string[]).includes(value)) return value as T
  issues.add(name, value, `must be one of ${allowed.join(', ')}`)
  return fallback
}

/**
 * A Linux interface name: 1–15 bytes (IFNAMSIZ - 1), no '/', ':' or whitespace, not '.' or '..' —
 * what the kernel's dev_valid_name accepts (':' is refused too: it marks an ip alias label).
 */
function linkName (raw: RawSettings, issues: Issues, name: string, fallback: string | null): string | null {
  const value = get(raw, name)
  if (value === undefined) return fallback
  if (Buffer.byteLength(value) > 15 || /[/:\s]/.test(value) || value === '.' || value === '..') {
    issues.add(name, value, 'must be a network interface name: at most 15 characters, no /, : or whitespace')
    return fallback
  }
  return value
}

type ParseOne<T> = (value: string) => { readonly ok: true, readonly value: T } | { readonly ok: false, readonly message: string }

/** One variable through its parser; unset → the fallback; invalid → an issue and the fallback. */
function single<T> (raw: RawSettings, issues: Issues, name: string, parse: ParseOne<T>, fallback: T): T {
  const value = get(raw, name)
  if (value === undefined) return fallback
  const parsed = parse(value)
  if (!parsed.ok) { issues.add(name, value, parsed.message); return fallback }
  return parsed.value
}

const port = (raw: RawSettings, issues: Issues, name: string, fallback: number): number => single(raw, issues, name, parsePort, fallback)
const duration = (raw: RawSettings, issues: Issues, name: string, fallback: number): number => single(raw, issues, name, parseDuration, fallback)

function source (raw: RawSettings, issues: Issues): SourceAddress | null {
  const value = get(raw, 'EGRESS_SOURCE')
  if (value === undefined) { issues.add('EGRESS_SOURCE', '', 'is required: the reserved source address, e.g. 192.0.2.99 or 192.0.2.99/24'); return null }
  const parsed = parseCidr(value, { hostBits: 'keep' })
  if (!parsed.ok) { issues.add('EGRESS_SOURCE', value, parsed.message); return null }
  const cidr = parsed.value
  if (isUnspecified(cidr) || isMulticast(cidr)) {
    issues.add('EGRESS_SOURCE', value, `${cidr.address} cannot be a source address`)
    return null
  }
  if (cidr.prefix === 0) {
    issues.add('EGRESS_SOURCE', value, 'a /0 prefix would put every address on the macvlan network')
    return null
  }
  return { ...cidr, prefixGiven: value.includes('/') }
}

function gateway (raw: RawSettings, issues: Issues, src: SourceAddress | null): IpAddress | null {
  const value = get(raw, 'EGRESS_GATEWAY')
  if (value === undefined) { issues.add('EGRESS_GATEWAY', '', 'is required: the next hop on the macvlan network'); return null }
  const parsed = parseIp(value)
  if (!parsed.ok) {
    issues.add('EGRESS_GATEWAY', value, value.includes('/') ? 'must be a single address, without a prefix' : parsed.message)
    return null
  }
  const gw = parsed.value
  if (isUnspecified(gw) || isMulticast(gw)) { issues.add('EGRESS_GATEWAY', value, `${gw.address} cannot be a gateway`); return null }
  if (src !== null && gw.family !== src.family) {
    issues.add('EGRESS_GATEWAY', value, `is IPv${gw.family}, but EGRESS_SOURCE is IPv${src.family}`)
    return null
  }
  if (src !== null && gw.address === src.address) {
    issues.add('EGRESS_GATEWAY', value, 'must not be EGRESS_SOURCE itself')
    return null
  }
  return gw
}

function mac (raw: RawSettings, issues: Issues): MacSetting {
  const value = get(raw, 'EGRESS_MACVLAN_MAC')
  if (value === undefined || value === 'stable') return { kind: 'stable' }
  if (value === 'random') return { kind: 'random' }
  const parsed = parseMac(value)
  if (!parsed.ok) { issues.add('EGRESS_MACVLAN_MAC', value, `${parsed.message}; or use random or stable`); return { kind: 'stable' } }
  return { kind: 'fixed', mac: parsed.value }
}

/** `host:port`, `:port`, `[v6]:port`; empty (set to '') = off; unset = `:9090`. */
function health (raw: RawSettings, issues: Issues): { host: string, port: number } | null {
  const name = 'EGRESS_HEALTH_ADDRESS'
  const value = raw[name]
  if (value === undefined) return { host: '', port: 9090 }
  if (value.trim() === '') return null
  const bad = (message: string): null => { issues.add(name, value, message); return null }
  const colon = value.lastIndexOf(':')
  if (colon === -1) return bad('must be host:port, :port or [ipv6]:port (empty turns the listener off)')
  let host = value.slice(0, colon)
  const portText = value.slice(colon + 1)
  const parsedPort = parsePort(portText)
  if (host.startsWith('[') && host.endsWith(']')) {
    const ip = parseIp(host.slice(1, -1))
    if (!ip.ok || ip.value.family !== 6) return bad('brackets are only for an IPv6 address: [2001:db8::1]:9090')
    host = ip.value.address
  } else if (host.includes(':')) {
    return bad('an IPv6 address must be in brackets: [::1]:9090')
  } else if (host !== '') {
    const ip = parseIp(host)
    if (ip.ok) host = ip.value.address
    else {
      const hostname = parseHostname(host, { requireDot: false })
      if (!hostname.ok) return bad(hostname.message)
      host = hostname.value
    }
  }
  if (!parsedPort.ok) return bad(parsedPort.message)
  return { host, port: parsedPort.value }
}

function connectPorts (raw: RawSettings, issues: Issues): readonly number[] | '*' {
  const name = 'EGRESS_HTTP_PROXY_CONNECT_PORTS'
  const value = get(raw, name)
  if (value === undefined || value.trim() === '*') return '*'
  const ports: number[] = []
  for (const item of value.split(',').map(s => s.trim())) {
    const parsed = parsePort(item)
    if (!parsed.ok) {
      issues.add(name, value, item === '*' ? "'*' must stand alone (any port)" : `'${item}': ${parsed.message}`)
      continue
    }
    if (!ports.includes(parsed.value)) ports.push(parsed.value)
  }
  return ports
}

/** Comma- or whitespace-separated CIDRs; host bits are cleared (the networks are what is meant). */
function clients (raw: RawSettings, issues: Issues): readonly Cidr[] | null {
  const name = 'EGRESS_HTTP_PROXY_CLIENTS'
  const value = get(raw, name)
  if (value === undefined || value.trim() === '') return null
  const list: Cidr[] = []
  for (const item of value.split(/[\s,]+/).filter(s => s !== '')) {
    const parsed = parseCidr(item, { hostBits: 'normalise' })
    if (!parsed.ok) { issues.add(name, value, parsed.message); continue }
    list.push(parsed.value)
  }
  return list
}

/** Debug switches as the old images read them: any non-empty value is on, except an explicit no. */
function debugOn (raw: RawSettings, name: string): boolean {
  const value = get(raw, name)
  return value !== undefined && !/^(0|false|no|off)$/i.test(value.trim())
}

function destinationRequired (raw: RawSettings, issues: Issues, name: string, modeName: ModeName): string | null {
  const value = get(raw, name)
  if (value === undefined) {
    issues.add(name, '', `is required in ${modeName} mode (or set ${name}_FILE)`)
    return null
  }
  return value
}

/** The most EGRESS_WORKERS may name: past one per core a worker only adds memory. */
export const MAX_WORKERS = 64

/** EGRESS_WORKERS: a whole number 1…MAX_WORKERS or auto; above 1 only in the proxy modes (redirect relays in the kernel). */
function workers (raw: RawSettings, issues: Issues, modeName: ModeName | null, mode: Mode | null): number | 'auto' {
  const text = get(raw, 'EGRESS_WORKERS')
  if (text === undefined) return 1
  if (text === 'auto') return 'auto'
  const n = /^[0-9]{1,3}$/.test(text) ? Number(text) : Number.NaN
  if (!(n >= 1 && n <= MAX_WORKERS)) {
    issues.add('EGRESS_WORKERS', text, `must be auto or a whole number from 1 to ${MAX_WORKERS}`)
    return 1
  }
  if (n > 1 && mode !== null && mode !== 'http-proxy' && mode !== 'dns-proxy') {
    issues.add('EGRESS_WORKERS', text, `applies to the http-proxy and dns-proxy modes; ${modeName ?? mode} mode relays in the kernel and runs no workers`)
  }
  return n
}

/** The number of worker processes to run: 'auto' is one per available CPU, in the proxy modes only. */
export function resolveWorkers (config: Pick<Config, 'workers' | 'mode' | 'dnsProxy'>, cpus: number): number {
  if (config.mode !== 'http-proxy' && config.mode !== 'dns-proxy') return 1
  // every forward is a DNAT rule: no process accepts or relays ('auto' included; a number > 1 is rejected)
  if (config.dnsProxy?.forwarding === 'kernel') return 1
  return config.workers === 'auto' ? Math.max(1, Math.min(MAX_WORKERS, cpus)) : config.workers
}

function parse (raw: RawSettings, issues: Issues): Config | null {
  const modeText = get(raw, 'EGRESS_ROUTER_MODE') ?? 'legacy'
  const modeName = Object.hasOwn(MODES, modeText) ? modeText as ModeName : null
  if (modeName === null) issues.add('EGRESS_ROUTER_MODE', modeText, `must be one of ${Object.keys(MODES).join(', ')}`)
  const mode = modeName === null ? null : MODES[modeName]

  const src = source(raw, issues)
  const gw = gateway(raw, issues, src)
  const family: Family | null = src?.family ?? null

  const iface = linkName(raw, issues, 'EGRESS_INTERFACE', null)
  const macvlanName = linkName(raw, issues, 'EGRESS_MACVLAN_NAME', 'macvlan0') ?? 'macvlan0'
  const podInterface = linkName(raw, issues, 'EGRESS_POD_INTERFACE', 'eth0') ?? 'eth0'
  if (iface !== null && iface === macvlanName) {
    issues.add('EGRESS_INTERFACE', iface, 'must differ from EGRESS_MACVLAN_NAME (the macvlan is made on top of it)')
  }
  if (podInterface === macvlanName) {
    issues.add('EGRESS_POD_INTERFACE', podInterface, 'must differ from EGRESS_MACVLAN_NAME (clients come in on one, traffic leaves on the other)')
  }
  const macvlanMode = oneOf(raw, issues, 'EGRESS_MACVLAN_MODE', MACVLAN_MODES, 'bridge')
  const macSetting = mac(raw, issues)
  const routing = oneOf(raw, issues, 'EGRESS_ROUTING', ROUTINGS, 'pod')
  const healthAddr = health(raw, issues)
  const proxyPort = port(raw, issues, 'EGRESS_HTTP_PROXY_PORT', 8080)
  const ports = connectPorts(raw, issues)
  const clientNets = clients(raw, issues)
  const accessLog = oneOf(raw, issues, 'EGRESS_HTTP_PROXY_ACCESS_LOG', ['on', 'off'], 'on') === 'on'
  const workerCount = workers(raw, issues, modeName, mode)
  const dnsForwarding = oneOf<DnsForwarding>(raw, issues, 'EGRESS_DNS_PROXY_FORWARDING', ['proxy', 'kernel'], 'proxy')
  if (dnsForwarding === 'kernel' && mode !== null && mode !== 'dns-proxy') {
    issues.add('EGRESS_DNS_PROXY_FORWARDING', 'kernel', `applies to dns-proxy mode only; ${modeName ?? mode} mode has no dns-proxy forwards`)
  }
  if (dnsForwarding === 'kernel' && mode === 'dns-proxy' && typeof workerCount === 'number' && workerCount > 1) {
    issues.add('EGRESS_WORKERS', String(workerCount), 'with EGRESS_DNS_PROXY_FORWARDING=kernel every forward relays in the kernel and no workers run')
  }
  const drainTimeoutMs = duration(raw, issues, 'EGRESS_DRAIN_TIMEOUT', 25_000)
  const minTtlMs = duration(raw, issues, 'EGRESS_DNS_MIN_TTL', 2_000)
  const maxTtlMs = duration(raw, issues, 'EGRESS_DNS_MAX_TTL', 300_000)
  const maxStaleMs = duration(raw, issues, 'EGRESS_DNS_MAX_STALE', 86_400_000)
  if (minTtlMs > maxTtlMs) {
    issues.add('EGRESS_DNS_MIN_TTL', raw.EGRESS_DNS_MIN_TTL ?? '2s', `must not be longer than EGRESS_DNS_MAX_TTL (${raw.EGRESS_DNS_MAX_TTL ?? '300s'})`)
  }
  let logLevel = oneOf(raw, issues, 'EGRESS_LOG_LEVEL', LOG_LEVELS, 'info')
  if ((debugOn(raw, 'EGRESS_ROUTER_DEBUG') || debugOn(raw, 'EGRESS_DNS_PROXY_DEBUG')) && LEVEL_RANK[logLevel] > LEVEL_RANK.debug) {
    logLevel = 'debug'
  }

  let redirect: RedirectConfig | null = null
  let httpProxy: HttpProxyConfig | null = null
  let dnsProxy: DnsProxyConfig | null = null
  if (modeName !== null && (mode === 'init' || mode === 'redirect' || mode === 'unit-test')) {
    const text = destinationRequired(raw, issues, 'EGRESS_DESTINATION', modeName)
    if (text !== null) {
      const parsed = parseDestination(text, { family })
      if (parsed.ok) redirect = parsed.value; else issues.list.push(...parsed.issues)
    }
  }
  if (modeName !== null && mode === 'http-proxy') {
    const text = destinationRequired(raw, issues, 'EGRESS_HTTP_PROXY_DESTINATION', modeName)
    if (text !== null) {
      const parsed = parseHttpAcl(text)
      if (parsed.ok) httpProxy = { port: proxyPort, connectPorts: ports, clients: clientNets, accessLog, acl: parsed.value }
      else issues.list.push(...parsed.issues)
    }
    if (healthAddr !== null && healthAddr.port === proxyPort) {
      issues.add('EGRESS_HTTP_PROXY_PORT', String(proxyPort), `is also the port of EGRESS_HEALTH_ADDRESS`)
    }
  }
  if (modeName !== null && mode === 'dns-proxy') {
    const text = destinationRequired(raw, issues, 'EGRESS_DNS_PROXY_DESTINATION', modeName)
    if (text !== null) {
      const parsed = parseDnsForwards(text, { family })
      if (parsed.ok) {
        dnsProxy = { forwards: parsed.value, forwarding: dnsForwarding }
        const clash = parsed.value.find(f => healthAddr !== null && f.port === healthAddr.port)
        if (clash !== undefined) {
          issues.add('EGRESS_DNS_PROXY_DESTINATION', text.split('\n')[clash.line - 1]!.trim(), `port ${clash.port} is also the port of EGRESS_HEALTH_ADDRESS`, clash.line)
        }
      } else issues.list.push(...parsed.issues)
    }
  }

  if (issues.list.length > 0 || modeName === null || mode === null || src === null || gw === null) return null
  return {
    modeName,
    mode,
    source: src,
    gateway: gw,
    interface: iface,
    macvlan: { name: macvlanName, mode: macvlanMode, mac: macSetting },
    podInterface,
    routing,
    redirect,
    httpProxy,
    dnsProxy,
    health: healthAddr,
    workers: workerCount,
    drainTimeoutMs,
    dns: { minTtlMs, maxTtlMs, maxStaleMs },
    logLevel,
    sources: {
      destinationFile: get(raw, 'EGRESS_DESTINATION_FILE') ?? null,
      httpProxyDestinationFile: get(raw, 'EGRESS_HTTP_PROXY_DESTINATION_FILE') ?? null,
      dnsProxyDestinationFile: get(raw, 'EGRESS_DNS_PROXY_DESTINATION_FILE') ?? null
    }
  }
}

/** Issues in the order of SPEC.md's table (then by line), whatever order the checks ran in. */
function inVariableOrder (list: ConfigIssue[]): ConfigIssue[] {
  const rank = (variable: string): number => {
    const i = VARIABLES.findIndex(v => v.name === variable)
    return i === -1 ? VARIABLES.length : i
  }
  return list
    .map((issue, index) => ({ issue, index }))
    .sort((a, b) => rank(a.issue.variable) - rank(b.issue.variable) || a.issue.line - b.issue.line || a.index - b.index)
    .map(({ issue }) => issue)
}

function deepFreeze<T> (value: T): T {
  if (value !== null && typeof value === 'object' && !Object.isFrozen(value)) {
    Object.freeze(value)
    for (const key of Object.keys(value)) deepFreeze((value as Record<string, unknown>)[key])
  }
  return value
}

/**
 * Validates every variable and every line and returns the frozen Config, or all the issues found
 * (each one variable, line, offending text and what is wrong — see formatIssue).
 */
export function parseConfig (raw: RawSettings): ParseConfigResult {
  const issues = new Issues()
  try {
    const config = parse(raw, issues)
    if (config === null) return { ok: false, issues: inVariableOrder(issues.list) }
    return { ok: true, config: deepFreeze(config) }
  } catch (err) {
    // not expected; reported rather than thrown so the cli still exits 2 with a readable line
    const why = err instanceof Error ? err.message : String(err)
    return { ok: false, issues: [...issues.list, { variable: 'configuration', line: 0, text: '', message: `internal error while validating: ${why}` }] }
  }
}
