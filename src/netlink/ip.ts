/**
 * IP address text ⇄ the network-order bytes rtnetlink carries. Pure. Text out is canonical
 * (IPv6 compressed, lower case — the WHATWG URL parser implements RFC 5952 for us).
 */
import { isIPv4, isIPv6 } from 'node:net'
import type { Family } from '../config/types.js'

export const AF_INET = 2
export const AF_INET6 = 10

export function afOf (family: Family): number {
  return family === 4 ? AF_INET : AF_INET6
}

export function familyOfAf (af: number): Family | null {
  return af === AF_INET ? 4 : af === AF_INET6 ? 6 : null
}

function v4Bytes (text: string): number[] {
  return text.split('.').map(Number)
}

/** `192.0.2.1` → 4 bytes, `2001:db8::1` → 16 bytes; throws on anything that is not an address. */
export function ipToBuffer (text: string): Buffer {
  if (isIPv4(text)) return Buffer.from(v4Bytes(text))
  if (!isIPv6(text)) throw new TypeError(`not an IP address: '${text}'`)
  let body = text.replace(/%.*$/, '')
  let tail: number[] = []
  const lastColon = body.lastIndexOf(':')
  if (body.slice(lastColon + 1).includes('.')) {
    tail = v4Bytes(body.slice(lastColon + 1))
    body = body.slice(0, lastColon + 1) + '0:0'
  }
  const [head = '', rest] = body.split('::')
  const left = head === '' ? [] : head.split(':')
  const right = rest === undefined || rest === '' ? [] : rest.split(':')
  const fill = rest === undefined ? [] : new Array<string>(8 - left.length - right.length).fill('0')
  const groups = [...left, ...fill, ...right].map(g => parseInt(g, 16))
  const out = Buffer.alloc(16)
  groups.forEach((g, i) => out.writeUInt16BE(g, i * 2))
  if (tail.length === 4) Buffer.from(tail).copy(out, 12)
  return out
}

/** 4 or 16 network-order bytes → canonical text. */
export function bufferToIp (buf: Uint8Array): string {
  if (buf.length === 4) return Array.from(buf).join('.')
  if (buf.length !== 16) throw new TypeError(`not an IP address: ${buf.length} bytes`)
  const b = Buffer.from(buf)
  const groups: string[] = []
  for (let i = 0; i < 16; i += 2) groups.push(b.readUInt16BE(i).toString(16))
  return new URL(`http://[${groups.join(':')}]/`).hostname.slice(1, -1)
}

/** Canonical form of an address text (`2001:DB8:0::1` → `2001:db8::1`). */
export function canonicalIp (text: string): string {
  return bufferToIp(ipToBuffer(text))
}

export function familyOf (text: string): Family {
  if (isIPv4(text)) return 4
  if (isIPv6(text)) return 6
  throw new TypeError(`not an IP address: '${text}'`)
}
