/**
 * The network tokens configuration values are made of: IP addresses, CIDRs, ports, host names, MACs.
 *
 * Validation leans on node:net (isIP, SocketAddress) instead of hand-written regular expressions, so
 * what we accept is exactly what the kernel-facing code can use. Every parser returns a result
 * (never throws) whose failure message completes the sentence "<token>: …" in a ConfigIssue.
 */
import { SocketAddress, isIP } from 'node:net'
import type { Cidr, Family, IpAddress } from './types.js'

export type Parsed<T> = { readonly ok: true, readonly value: T } | { readonly ok: false, readonly message: string }

const ok = <T>(value: T): Parsed<T> => ({ ok: true, value })
const fail = <T>(message: string): Parsed<T> => ({ ok: false, message })

const MAX_PREFIX: Record<Family, number> = { 4: 32, 6: 128 }

/**
 * A single IPv4 or IPv6 address, canonicalised (IPv6 compressed, lower case, as inet_ntop prints it).
 * Rejected: zones (`fe80::1%eth0`: a zone has no meaning in a rule or a route we install), IPv4 with
 * leading zeros (`010.1.1.1`: inet_aton would read it as octal, so its meaning is ambiguous) and
 * out-of-range octets (`999.1.1.1`, which the OpenShift router's regular expression let through).
 */
export function parseIp (text: string): Parsed<IpAddress> {
  if (text.includes('%')) return fail(`${text} has a zone index; zones are not supported here`)
  const version = isIP(text)
  if (version === 0) return fail(`${text} is not a valid IPv4 or IPv6 address`)
  const family: Family = version === 4 ? 4 : 6
  try {
    const { address } = new SocketAddress({ address: text, family: family === 4 ? 'ipv4' : 'ipv6' })
    return ok({ address, family })
  } catch {
    // isIP and inet_pton disagree only on exotic input; treat it as invalid rather than guess
    return fail(`${text} is not a valid IPv4 or IPv6 address`)
  }
}

/** Prefix length text: decimal, no sign, no leading zeros, within the family's range. */
function parsePrefix (text: string, family: Family): Parsed<number> {
  const max = MAX_PREFIX[family]
  if (!/^(0|[1-9][0-9]{0,2})$/.test(text) || Number(text) > max) {
    return fail(`prefix length must be a number from 0 to ${max}`)
  }
  return ok(Number(text))
}

export interface CidrOptions {
  /**
   * 'normalise': clear host bits (`192.0.2.7/24` → `192.0.2.0/24`), as `ip route` does for a route's
   * destination and squid did for a `dst` ACL — the network is what the user meant.
   * 'keep': keep the address as written (an interface address such as EGRESS_SOURCE `192.0.2.99/24`).
   */
  readonly hostBits: 'normalise' | 'keep'
  /** without `/N`, the prefix is the full length (a single host): 32 or 128 */
  readonly prefixRequired?: boolean
}

/** `192.0.2.0/24`, `2001:db8::/32`, or a bare address (prefix 32/128 unless prefixRequired). */
export function parseCidr (text: string, options: CidrOptions): Parsed<Cidr> {
  const slash = text.indexOf('/')
  const addressText = slash === -1 ? text : text.slice(0, slash)
  const ip = parseIp(addressText)
  if (!ip.ok) return ip
  if (slash === -1) {
    if (options.prefixRequired === true) return fail(`${text} needs a prefix length (/N)`)
    return ok({ ...ip.value, prefix: MAX_PREFIX[ip.value.family] })
  }
  const prefix = parsePrefix(text.slice(slash + 1), ip.value.family)
  if (!prefix.ok) return prefix
  const address = options.hostBits === 'normalise' ? networkAddress(ip.value, prefix.value) : ip.value.address
  return ok({ address, family: ip.value.family, prefix: prefix.value })
}

/** The address with every bit after `prefix` cleared, canonical text. */
export function networkAddress (ip: IpAddress, prefix: number): string {
  const bytes = addressBytes(ip)
  for (let bit = prefix; bit < bytes.length * 8; bit++) {
    bytes[bit >> 3] = bytes[bit >> 3]! & ~(0x80 >> (bit & 7))
  }
  return bytesToAddress(bytes, ip.family)
}

/** The 4 or 16 bytes of a canonical address (as parseIp returns it). */
export function addressBytes (ip: IpAddress): Uint8Array {
  if (ip.family === 4) return Uint8Array.from(ip.address.split('.').map(Number))
  let text = ip.address
  const groups: number[] = []
  // an embedded IPv4 tail (`::ffff:192.0.2.1`) is two 16-bit groups
  const lastColon = text.lastIndexOf(':')
  const tail = text.slice(lastColon + 1)
  let tailGroups: number[] = []
  if (tail.includes('.')) {
    const [a, b, c, d] = tail.split('.').map(Number) as [number, number, number, number]
    tailGroups = [(a << 8) | b, (c << 8) | d]
    text = text.slice(0, lastColon + 1) + '0'
  }
  const [head = '', rest] = text.split('::') as [string, string | undefined]
  const headGroups = head === '' ? [] : head.split(':').map(g => parseInt(g, 16))
  let restGroups = rest === undefined || rest === '' ? [] : rest.split(':').map(g => parseInt(g, 16))
  if (tailGroups.length > 0) {
    // the placeholder '0' stood for the two IPv4 groups
    if (rest === undefined) headGroups.pop(); else restGroups = restGroups.slice(0, -1)
  }
  const known = headGroups.length + restGroups.length + tailGroups.length
  groups.push(...headGroups)
  if (rest !== undefined) for (let i = known; i < 8; i++) groups.push(0)
  groups.push(...restGroups, ...tailGroups)
  const bytes = new Uint8Array(16)
  groups.forEach((g, i) => { bytes[2 * i] = g >> 8; bytes[2 * i + 1] = g & 0xff })
  return bytes
}

function bytesToAddress (bytes: Uint8Array, family: Family): string {
  if (family === 4) return Array.from(bytes).join('.')
  const groups: string[] = []
  for (let i = 0; i < 16; i += 2) groups.push(((bytes[i]! << 8) | bytes[i + 1]!).toString(16))
  // SocketAddress compresses and lower-cases exactly as inet_ntop does
  return new SocketAddress({ address: groups.join(':'), family: 'ipv6' }).address
}

/** true if `ip` lies inside `cidr` (same family, first `prefix` bits equal). */
export function cidrContains (cidr: Cidr, ip: IpAddress): boolean {
  if (cidr.family !== ip.family) return false
  return networkAddress(ip, cidr.prefix) === networkAddress(cidr, cidr.prefix)
}

/** `0.0.0.0`/`::`: the unspecified address. */
export function isUnspecified (ip: IpAddress): boolean {
  return addressBytes(ip).every(b => b === 0)
}

/** 224.0.0.0/4 or ff00::/8 */
export function isMulticast (ip: IpAddress): boolean {
  const first = addressBytes(ip)[0]!
  return ip.family === 4 ? (first & 0xf0) === 0xe0 : first === 0xff
}

/**
 * A TCP/UDP port, 1–65535, written in plain decimal. Leading zeros are rejected: bash (the
 * OpenShift scripts) read `010` as octal 8 while iptables read it otherwise, so its meaning is
 * ambiguous.
 */
export function parsePort (text: string): Parsed<number> {
  if (!/^[1-9][0-9]{0,4}$/.test(text) || Number(text) > 65535) {
    return fail('port must be a number from 1 to 65535')
  }
  return ok(Number(text))
}

export interface HostnameOptions {
  /** the OpenShift dns-proxy required a dot (`8080 invalid` was rejected) */
  readonly requireDot: boolean
}

/**
 * A DNS host name: labels of letters, digits and hyphens (1–63 characters each, ≤ 253 in all),
 * starting with a letter or digit, compared case-insensitively and with a trailing dot ignored;
 * returned lower case without the trailing dot. A name whose last label is all digits is a
 * malformed IPv4 address (`999.1.1.1`, `1.2.3.4.5`), never a host name (RFC 3696 §2).
 */
export function parseHostname (text: string, options: HostnameOptions): Parsed<string> {
  const name = (text.endsWith('.') ? text.slice(0, -1) : text).toLowerCase()
  if (name.length === 0 || name.length > 253) return fail(`${text} is not a valid host name`)
  const labels = name.split('.')
  if (!/^[a-z0-9]/.test(name) || !labels.every(l => /^[a-z0-9-]{1,63}$/.test(l))) {
    return fail(`${text} is not a valid IP address or host name`)
  }
  if (/^[0-9]+$/.test(labels[labels.length - 1]!)) return fail(`${text} is not a valid IPv4 address`)
  if (options.requireDot && labels.length < 2) {
    return fail(`${text} is not an IP address, and a host name must contain a dot`)
  }
  return ok(name)
}

/**
 * A MAC address `aa:bb:cc:dd:ee:ff` (`-` separators accepted), returned lower case with colons.
 * Multicast (group bit set) and all-zero addresses cannot be a link's own address.
 */
export function parseMac (text: string): Parsed<string> {
  if (!/^[0-9a-fA-F]{2}([:-][0-9a-fA-F]{2}){5}$/.test(text) || (text.includes(':') && text.includes('-'))) {
    return fail(`${text} is not a MAC address (expected six hex bytes like 02:00:5e:10:00:01)`)
  }
  const mac = text.toLowerCase().replaceAll('-', ':')
  const bytes = mac.split(':').map(b => parseInt(b, 16))
  if ((bytes[0]! & 1) === 1) return fail(`${text} is a multicast MAC address; a link needs a unicast one`)
  if (bytes.every(b => b === 0)) return fail(`${text} is the all-zero MAC address`)
  return ok(mac)
}

/** The address as it appears before `:port` (IPv6 in brackets). */
export function withPort (ip: IpAddress, port: number): string {
  return ip.family === 6 ? `[${ip.address}]:${port}` : `${ip.address}:${port}`
}
