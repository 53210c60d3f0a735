/**
 * Request targets of a forward proxy, parsed and canonicalised before any ACL sees them.
 *
 * Every spelling of an address that a client (curl, a browser: the WHATWG URL parser) or the C library
 * (inet_aton: `3221225994`, `0xc0000207`, `0300.0.02.07`, `192.0.519`, `1.2.3.4.`) would connect to is
 * turned into one canonical IpAddress, so `!192.0.2.7` cannot be bypassed by writing it differently.
 * IPv4-mapped IPv6 (`::ffff:192.0.2.7`, `::ffff:c000:207`) *is* the IPv4 address: it becomes IPv4 here.
 * Host names come out lower case, punycoded, without the trailing dot.
 */
import { isIPv4, isIPv6 } from 'node:net'
import type { ForwardTarget, IpAddress } from '../config/types.js'
import { boundedMemo } from './memo.js'

export type ParseResult<T> = { readonly ok: true, readonly value: T } | { readonly ok: false, readonly reason: string }

/** The host of a request target: an IP address or a host name, the same two cases as a dns-proxy forward's target. */
export type TargetHost = ForwardTarget

export interface RequestTarget {
  readonly host: TargetHost
  readonly port: number
  /** canonical `host[:port]` (port left out when it is the scheme's default): the upstream Host header */
  readonly authority: string
}

export interface AbsoluteTarget {
  readonly target: RequestTarget
  /** origin-form path and query exactly as the client sent them (never re-normalised) */
  readonly path: string
}

const ok = <T>(value: T): ParseResult<T> => ({ ok: true, value })
const fail = <T>(reason: string): ParseResult<T> => ({ ok: false, reason })

// ---- addresses as bytes ----------------------------------------------------------------------

function parseIpv4Bytes (text: string): Uint8Array | null {
  // net.isIPv4 accepts only dotted decimal without leading zeros: the strict form resolvers and configs use.
  if (!isIPv4(text)) return null
  return Uint8Array.from(text.split('.').map(Number))
}

function parseIpv6Bytes (text: string): Uint8Array | null {
  if (!isIPv6(text) || text.includes('%')) return null
  let head = text
  let v4Tail: Uint8Array | null = null
  const lastColon = text.lastIndexOf(':')
  if (text.slice(lastColon + 1).includes('.')) {
    v4Tail = parseIpv4Bytes(text.slice(lastColon + 1))
    if (v4Tail === null) return null
    head = text.slice(0, lastColon + 1) + '0:0'
  }
  const halves = head.split('::')
  if (halves.length > 2) return null
  const groups = (s: string): number[] => s === '' ? [] : s.split(':').map(g => parseInt(g, 16))
  const left = groups(halves[0] ?? '')
  const right = halves.length === 2 ? groups(halves[1] ?? '') : []
  const fill = 8 - left.length - right.length
  if (halves.length === 1 ? left.length !== 8 : fill < 1) return null
  const words = [...left, ...new Array<number>(halves.length === 2 ? fill : 0).fill(0), ...right]
  const bytes = new Uint8Array(16)
  words.forEach((w, i) => { bytes[i * 2] = w >> 8; bytes[i * 2 + 1] = w & 0xff })
  if (v4Tail !== null) bytes.set(v4Tail, 12)
  return bytes
}

const isMappedIpv4 = (b: Uint8Array): boolean =>
  b.length === 16 && b.subarray(0, 10).every(x => x === 0) && b[10] === 0xff && b[11] === 0xff

/** Canonical text: dotted decimal, or RFC 5952 IPv6 (lower case, longest zero run compressed, first on a tie). */
export function formatIpBytes (bytes: Uint8Array): IpAddress {
  if (bytes.length === 4) return { address: Array.from(bytes).join('.'), family: 4 }
  if (isMappedIpv4(bytes)) return formatIpBytes(bytes.subarray(12))
  const words: number[] = []
  for (let i = 0; i < 16; i += 2) words.push(((bytes[i] ?? 0) << 8) | (bytes[i + 1] ?? 0))
  let bestStart = -1
  let bestLen = 0
  for (let i = 0; i < 8;) {
    if (words[i] !== 0) { i++; continue }
    let j = i
    while (j < 8 && words[j] === 0) j++
    if (j - i > bestLen && j - i >= 2) { bestStart = i; bestLen = j - i }
    i = j
  }
  const hex = (ws: number[]): string => ws.map(w => w.toString(16)).join(':')
  const address = bestStart < 0
    ? hex(words)
    : `${hex(words.slice(0, bestStart))}::${hex(words.slice(bestStart + bestLen))}`
  return { address, family: 6 }
}

/**
 * A textual address as resolvers, configs and sockets write it (dotted decimal, any valid IPv6 spelling),
 * canonicalised; IPv4-mapped IPv6 becomes IPv4. Not for request targets: see parseHost for those.
 */
export function parseIpAddress (text: string): IpAddress | null {
  const bytes = canonicalIpBytes(text)
  return bytes === null ? null : formatIpBytes(bytes)
}

/**
 * The bytes of a textual address in its canonical family: 4 for IPv4 and for IPv4-mapped IPv6, else 16.
 * For a caller that needs both the bytes and (maybe) the canonical text: one parse instead of one per use.
 */
export function canonicalIpBytes (text: string): Uint8Array | null {
  const bytes = parseIpv4Bytes(text) ?? parseIpv6Bytes(text)
  return bytes !== null && isMappedIpv4(bytes) ? bytes.subarray(12) : bytes
}

/** The canonical form of an address from elsewhere (a resolver answer may spell IPv4 as `::ffff:…`). */
export function canonicalIp (address: IpAddress): IpAddress | null {
  return parseIpAddress(address.address)
}

/** 4 or 16 bytes of a canonical address. */
export function ipBytes (address: IpAddress): Uint8Array {
  const bytes = address.family === 4 ? parseIpv4Bytes(address.address) : parseIpv6Bytes(address.address)
  if (bytes === null) throw new TypeError(`not an IPv${address.family} address: '${address.address}'`)
  return bytes
}

/**
 * The IPv4 address carried inside an IPv6 address by a translation mechanism, which a gateway on the
 * path may turn back into IPv4 traffic: NAT64 well-known prefix 64:ff9b::/96 (RFC 6052), SIIT
 * ::ffff:0:0:0/96 (RFC 6145), 6to4 2002::/16 (RFC 3056), IPv4-compatible ::/96 (deprecated; `::` and
 * `::1` excluded). IPv4-mapped addresses never reach here: they are canonicalised to IPv4.
 */
export function embeddedIpv4 (address: IpAddress): IpAddress | null {
  if (address.family !== 6) return null
  const inner = embeddedIpv4Bytes(ipBytes(address))
  return inner === null ? null : formatIpBytes(inner)
}

/** embeddedIpv4 on an address's bytes: the 4 bytes of the IPv4 address inside, or null (also for 4 bytes). */
export function embeddedIpv4Bytes (b: Uint8Array): Uint8Array | null {
  if (b.length !== 16) return null
  const zeros = (from: number, to: number): boolean => b.subarray(from, to).every(x => x === 0)
  if (b[0] === 0x00 && b[1] === 0x64 && b[2] === 0xff && b[3] === 0x9b && zeros(4, 12)) return b.subarray(12)
  if (zeros(0, 8) && b[8] === 0xff && b[9] === 0xff && zeros(10, 12)) return b.subarray(12)
  if (b[0] === 0x20 && b[1] === 0x02) return b.subarray(2, 6)
  if (zeros(0, 12) && !(zeros(12, 15) && (b[15] ?? 0) <= 1)) return b.subarray(12)
  return null
}

// ---- hosts, authorities, request targets -----------------------------------------------------

const NAME = /^[a-z0-9_-]+(?:\.[a-z0-9_-]+)*$/

/** Lower case, trailing dot removed: how names are compared everywhere. */
export function normaliseHostName (name: string): string {
  const lower = name.toLowerCase()
  return lower.endsWith('.') ? lower.slice(0, -1) : lower
}

/**
 * A host as a client wrote it in a request target. The WHATWG URL host parser decides what is an
 * address (the same parser curl-alikes and browsers use, whose IPv4 rules mirror inet_aton): any
 * numeric notation, percent-encoding or full-width digits end up as the canonical address.
 */
export function parseHost (text: string): ParseResult<TargetHost> {
  return cachedParseHost(text)
}

/**
 * Results of parseHost by the exact text, bounded (cleared when full): a proxy sees the same few hosts on
 * request after request, and the WHATWG parse (`new URL`) was the largest single cost of a keep-alive
 * request in JavaScript. The results are immutable, so sharing one is safe.
 */
const cachedParseHost = boundedMemo(1024, (text: string) => parseHostUncached(text))

function parseHostUncached (text: string): ParseResult<TargetHost> {
  if (text === '') return fail('empty host')
  const bracketed = text.startsWith('[')
  if (bracketed ? !/^\[[0-9a-fA-F:.]+\]$/.test(text) : /[\s/?#@\\:[\]]/.test(text)) {
    return fail(`invalid host '${text}'`)
  }
  let hostname: string
  try {
    hostname = new URL(`http://${text}/`).hostname
  } catch {
    return fail(`invalid host '${text}'`)
  }
  if (hostname.startsWith('[')) {
    const address = parseIpAddress(hostname.slice(1, -1))
    return address === null ? fail(`invalid IPv6 address '${text}'`) : ok({ kind: 'ip', address })
  }
  if (isIPv4(hostname)) return ok({ kind: 'ip', address: { address: hostname, family: 4 } })
  const name = normaliseHostName(hostname)
  if (!NAME.test(name) || name.length > 253 || name.split('.').some(l => l.length > 63)) {
    return fail(`invalid host name '${text}'`)
  }
  return ok({ kind: 'name', name })
}

function parsePort (text: string): number | null {
  if (!/^\d{1,5}$/.test(text)) return null
  const port = Number(text)
  return port >= 1 && port <= 65535 ? port : null
}

/** `host` for a Host header or a log line: IPv6 in brackets. */
export function formatHost (host: TargetHost): string {
  if (host.kind === 'name') return host.name
  return host.address.family === 6 ? `[${host.address.address}]` : host.address.address
}

/** `host:port` for logs and CONNECT. */
export function formatTarget (target: RequestTarget): string {
  return `${formatHost(target.host)}:${target.port}`
}

/** Splits `host[:port]` / `[v6][:port]`; port text is '' when absent. */
function splitAuthority (authority: string): { host: string, port: string | null } | null {
  if (authority.startsWith('[')) {
    const close = authority.indexOf(']')
    if (close < 0) return null
    const rest = authority.slice(close + 1)
    if (rest !== '' && !rest.startsWith(':')) return null
    return { host: authority.slice(0, close + 1), port: rest === '' ? null : rest.slice(1) }
  }
  const colon = authority.lastIndexOf(':')
  if (colon < 0) return { host: authority, port: null }
  return { host: authority.slice(0, colon), port: authority.slice(colon + 1) }
}

function buildTarget (hostText: string, portText: string | null, defaultPort: number | null): ParseResult<RequestTarget> {
  const host = parseHost(hostText)
  if (!host.ok) return host
  let port: number | null
  if (portText === null || portText === '') {
    if (defaultPort === null) return fail('port missing')
    port = defaultPort
  } else {
    port = parsePort(portText)
    if (port === null) return fail(`invalid port '${portText}'`)
  }
  const hostPart = formatHost(host.value)
  const authority = port === defaultPort ? hostPart : `${hostPart}:${port}`
  return ok({ host: host.value, port, authority })
}

/**
 * The absolute-form target of a proxied HTTP request: `http://host[:port][/path][?query]`.
 * Only `http:` (an `https:` URI would need TLS origination: clients use CONNECT for that); no
 * userinfo (RFC 9110 §4.2.4: treat as an error); no fragment; no backslashes (which the WHATWG
 * parser would read as `/`, a classic source of host confusion).
 */
export function parseAbsoluteTarget (requestTarget: string): ParseResult<AbsoluteTarget> {
  const m = /^([a-zA-Z][a-zA-Z0-9+.-]*):\/\/([^/?#]*)(.*)$/.exec(requestTarget)
  if (m === null) return fail(`not an absolute-form request target: '${requestTarget}'`)
  const [, scheme = '', authority = '', rest = ''] = m
  if (scheme.toLowerCase() !== 'http') return fail(`scheme '${scheme}' is not forwarded (use CONNECT for https)`)
  if (authority.includes('@')) return fail('userinfo in the request target is not accepted')
  if (/[\\\s#]/.test(requestTarget)) return fail(`invalid request target '${requestTarget}'`)
  const parts = splitAuthority(authority)
  if (parts === null) return fail(`invalid authority '${authority}'`)
  const target = buildTarget(parts.host, parts.port, 80)
  if (!target.ok) return target
  const path = rest === '' ? '/' : rest.startsWith('?') ? `/${rest}` : rest
  return ok({ target: target.value, path })
}

/** The authority-form target of CONNECT: `host:port`, `[v6]:port`; the port is required. */
export function parseAuthorityTarget (requestTarget: string): ParseResult<RequestTarget> {
  if (/[\s/?#@\\]/.test(requestTarget)) return fail(`invalid CONNECT target '${requestTarget}'`)
  const parts = splitAuthority(requestTarget)
  if (parts === null || parts.port === null || parts.port === '') return fail(`CONNECT target needs host:port, got '${requestTarget}'`)
  return buildTarget(parts.host, parts.port, null)
}
