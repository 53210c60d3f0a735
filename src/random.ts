/**
 * Random numbers from the kernel's generator (/dev/urandom), for DNS query IDs and a drawn MAC, without
 * node:crypto: its first use initialises OpenSSL, whose code and tables then stay mapped, ~2 MiB of RSS in
 * every daemon for a few random bytes a second (a bare node: 40.6 MiB, 42.7 once `crypto.randomInt` ran;
 * one read of /dev/urandom: 40.7). Bytes are read 4 KiB at a time and each is handed out once.
 */
import { closeSync, openSync, readSync } from 'node:fs'

const POOL_BYTES = 4096

let pool = Buffer.alloc(0)
let used = 0

function fill (target: Buffer): void {
  const fd = openSync('/dev/urandom', 'r')
  try {
    let got = 0
    while (got < target.length) {
      const n = readSync(fd, target, got, target.length - got, null)
      if (n <= 0) throw new Error('/dev/urandom: short read')
      got += n
    }
  } finally {
    closeSync(fd)
  }
}

/** n fresh random bytes (a copy: the caller may keep it). */
export function randomBytes (n: number): Buffer {
  if (!Number.isSafeInteger(n) || n < 0) throw new RangeError(`randomBytes: bad length ${n}`)
  if (n > POOL_BYTES) { const out = Buffer.allocUnsafe(n); fill(out); return out }
  if (used + n > pool.length) {
    pool = Buffer.allocUnsafe(POOL_BYTES)
    fill(pool)
    used = 0
  }
  const out = Buffer.from(pool.subarray(used, used + n))
  // handed out once: the bytes are not read again
  pool.fill(0, used, used + n)
  used += n
  return out
}

/** A uniform integer in [0, 65536): a DNS query ID. */
export function randomUint16 (): number {
  return randomBytes(2).readUInt16BE(0)
}
