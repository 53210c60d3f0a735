/**
 * MAC addresses for a created macvlan. `stable` derives the MAC from EGRESS_SOURCE so it survives
 * restarts and node moves and can be allow-listed (OpenStack allowed-address-pairs, port security).
 */
import { sha256 } from '@noble/hashes/sha2.js'
import { randomBytes } from '../random.js'

/** Forces "locally administered" (bit 1) and clears "multicast" (bit 0) of the first octet. */
function localUnicast (bytes: Uint8Array): string {
  const b = Array.from(bytes.subarray(0, 6))
  b[0] = ((b[0] ?? 0) & 0xfc) | 0x02
  return b.map(x => x.toString(16).padStart(2, '0')).join(':')
}

/**
 * The first six bytes of sha256(address), made locally administered unicast. A prefix (`/24`) and
 * case are ignored, so `192.0.2.99/24` and `192.0.2.99` give the same MAC. Pure.
 */
export function stableMac (source: string): string {
  const address = source.trim().toLowerCase().replace(/\/\d+$/, '')
  return localUnicast(sha256(Buffer.from(`egress-router:${address}`)))
}

/** A fresh locally administered unicast MAC (what `EGRESS_MACVLAN_MAC=random` asks for). */
export function randomMac (): string {
  return localUnicast(randomBytes(6))
}

/** `aa:bb:cc:dd:ee:ff` → 6 bytes; throws on anything else. */
export function macToBuffer (mac: string): Buffer {
  if (!/^[0-9a-f]{2}(:[0-9a-f]{2}){5}$/i.test(mac)) throw new TypeError(`not a MAC address: '${mac}'`)
  return Buffer.from(mac.split(':').map(x => parseInt(x, 16)))
}

export function bufferToMac (buf: Uint8Array): string {
  return Array.from(buf).map(x => x.toString(16).padStart(2, '0')).join(':')
}
