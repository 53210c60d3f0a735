/**
 * IP literals as the resolver sees them: a host name that is already an address is answered with
 * itself, in the canonical text form the rest of the daemon compares (IPv6 compressed, lower case).
 */
import { isIP, SocketAddress } from 'node:net'
import type { IpAddress } from '../config/types.js'

/** `192.0.2.1`, `2001:DB8::1` or `[2001:db8::1]` → the canonical IpAddress; anything else → null. */
export function ipLiteral (text: string): IpAddress | null {
  const bare = text.startsWith('[') && text.endsWith(']') ? text.slice(1, -1) : text
  const family = isIP(bare)
  if (family === 4) return { address: bare, family: 4 }
  if (family === 6) {
    // SocketAddress runs inet_pton/inet_ntop: the same canonical form as the config parser's.
    return { address: new SocketAddress({ address: bare, family: 'ipv6' }).address, family: 6 }
  }
  return null
}

/** Set equality of two address lists (order is the server's and carries no meaning for change). */
export function sameAddresses (a: readonly IpAddress[], b: readonly IpAddress[]): boolean {
  if (a.length !== b.length) return false
  const left = new Set(a.map(ip => ip.address))
  if (left.size !== new Set(b.map(ip => ip.address)).size) return false
  return b.every(ip => left.has(ip.address))
}
