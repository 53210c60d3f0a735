/**
 * The IFLA_LINKINFO codec. The `netlink` package hands this attribute over as a raw Buffer, so the
 * nested attributes are encoded and decoded here, byte for byte, as the kernel lays them out:
 *
 *   IFLA_LINKINFO
 *     IFLA_INFO_KIND  "macvlan\0"
 *     IFLA_INFO_DATA
 *       IFLA_MACVLAN_MODE  u32
 *
 * Every attribute is `u16 len (header included) | u16 type | payload`, padded to 4 bytes; integers
 * are in host byte order (netlink is a local protocol). Pure: no sockets here.
 */
import { endianness } from 'node:os'
import type { MacvlanMode } from '../config/types.js'

const LITTLE_ENDIAN = endianness() === 'LE'

export const IFLA_INFO_KIND = 1
export const IFLA_INFO_DATA = 2
export const IFLA_INFO_SLAVE_KIND = 4
export const IFLA_MACVLAN_MODE = 1
/** The NLA_F_NESTED / NLA_F_NET_BYTEORDER bits ride in the type field; the kernel masks them off. */
const NLA_TYPE_MASK = 0x3fff

/** `enum macvlan_mode` in include/uapi/linux/if_link.h */
export const MACVLAN_MODES: Readonly<Record<MacvlanMode | 'source', number>> = {
  private: 1,
  vepa: 2,
  bridge: 4,
  passthru: 8,
  source: 16
}

export interface LinkInfo {
  /** IFLA_INFO_KIND, e.g. `macvlan`, `veth`; null when absent (physical NICs have none) */
  readonly kind: string | null
  /** IFLA_INFO_SLAVE_KIND when the link is enslaved (bridge port, bond member) */
  readonly slaveKind: string | null
  /** IFLA_MACVLAN_MODE decoded, only for kind macvlan/macvtap */
  readonly macvlanMode: MacvlanMode | 'source' | null
  /** the raw IFLA_INFO_DATA payload, for kinds this codec does not interpret */
  readonly data: Buffer | null
}

function align4 (n: number): number {
  return (n + 3) & ~3
}

function writeU16 (buf: Buffer, value: number, offset: number): void {
  if (LITTLE_ENDIAN) buf.writeUInt16LE(value, offset)
  else buf.writeUInt16BE(value, offset)
}

function readU16 (buf: Buffer, offset: number): number {
  return LITTLE_ENDIAN ? buf.readUInt16LE(offset) : buf.readUInt16BE(offset)
}

/** One attribute with its header and padding. */
export function encodeAttr (type: number, payload: Buffer): Buffer {
  const len = 4 + payload.length
  const out = Buffer.alloc(align4(len))
  writeU16(out, len, 0)
  writeU16(out, type, 2)
  payload.copy(out, 4)
  return out
}

/** u32 in host byte order, as the kernel expects for ifindex / mode / table attributes. */
export function u32 (value: number): Buffer {
  if (!Number.isInteger(value) || value < 0 || value > 0xffffffff) throw new RangeError(`not a u32: ${value}`)
  const out = Buffer.alloc(4)
  if (LITTLE_ENDIAN) out.writeUInt32LE(value, 0)
  else out.writeUInt32BE(value, 0)
  return out
}

export function readU32 (buf: Buffer, offset = 0): number {
  return LITTLE_ENDIAN ? buf.readUInt32LE(offset) : buf.readUInt32BE(offset)
}

/** Splits a run of attributes into [type, payload] pairs; stops at a truncated attribute. */
export function decodeAttrs (buf: Buffer): Array<[number, Buffer]> {
  const out: Array<[number, Buffer]> = []
  let offset = 0
  while (offset + 4 <= buf.length) {
    const len = readU16(buf, offset)
    if (len < 4 || offset + len > buf.length) break
    out.push([readU16(buf, offset + 2) & NLA_TYPE_MASK, buf.subarray(offset + 4, offset + len)])
    offset += align4(len)
  }
  return out
}

function cString (value: string): Buffer {
  return Buffer.concat([Buffer.from(value, 'utf8'), Buffer.alloc(1)])
}

function readCString (buf: Buffer): string {
  const nul = buf.indexOf(0)
  return buf.subarray(0, nul === -1 ? buf.length : nul).toString('utf8')
}

/** The IFLA_LINKINFO payload for `type macvlan mode MODE`. */
export function encodeMacvlanLinkInfo (mode: MacvlanMode): Buffer {
  const data = encodeAttr(IFLA_MACVLAN_MODE, u32(MACVLAN_MODES[mode]))
  return Buffer.concat([
    encodeAttr(IFLA_INFO_KIND, cString('macvlan')),
    encodeAttr(IFLA_INFO_DATA, data)
  ])
}

function modeName (value: number): MacvlanMode | 'source' | null {
  for (const [name, v] of Object.entries(MACVLAN_MODES)) {
    if (v === value) return name as MacvlanMode | 'source'
  }
  return null
}

/** Decodes an IFLA_LINKINFO payload as the kernel reports it in RTM_NEWLINK. */
export function decodeLinkInfo (buf: Buffer | undefined): LinkInfo {
  let kind: string | null = null
  let slaveKind: string | null = null
  let data: Buffer | null = null
  if (buf !== undefined) {
    for (const [type, payload] of decodeAttrs(buf)) {
      if (type === IFLA_INFO_KIND) kind = readCString(payload)
      else if (type === IFLA_INFO_SLAVE_KIND) slaveKind = readCString(payload)
      else if (type === IFLA_INFO_DATA) data = payload
    }
  }
  let macvlanMode: LinkInfo['macvlanMode'] = null
  if ((kind === 'macvlan' || kind === 'macvtap') && data !== null) {
    for (const [type, payload] of decodeAttrs(data)) {
      if (type === IFLA_MACVLAN_MODE && payload.length >= 4) macvlanMode = modeName(readU32(payload))
    }
  }
  return { kind, slaveKind, macvlanMode, data }
}
