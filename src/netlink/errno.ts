/**
 * Turns what the `netlink` package throws into a NetlinkError with an errno. The package reports a
 * kernel NLMSG_ERROR only as the text `Request rejected: EEXIST` (or the bare number when Node does
 * not know the name), its own timeout as `Timeout has been reached`, and socket failures as an
 * ErrnoException with `code`. Pure.
 */
import { getSystemErrorName } from 'node:util'
import { NetlinkError } from '../errors.js'

const REJECTED = /^Request rejected: (E[A-Z0-9]+|-?\d+)$/

function nameOfNumber (n: number): string {
  const abs = Math.abs(n)
  try {
    const name = getSystemErrorName(-abs)
    if (/^E[A-Z0-9]+$/.test(name)) return name
  } catch {}
  return `ERRNO_${abs}`
}

/** The errno name carried by an error from the netlink package, or null if it carries none. */
export function errnoOf (err: unknown): string | null {
  if (err instanceof NetlinkError) return err.errno
  if (!(err instanceof Error)) return null
  const m = REJECTED.exec(err.message)
  if (m?.[1] !== undefined) return /^-?\d+$/.test(m[1]) ? nameOfNumber(Number(m[1])) : m[1]
  if (err.message === 'Timeout has been reached') return 'ETIMEDOUT'
  const code = (err as { code?: unknown }).code
  if (typeof code === 'string' && /^E[A-Z0-9]+$/.test(code)) return code
  return null
}

/** Wraps any failure of `operation` as a NetlinkError; an unrecognised error becomes errno 'EIO'. */
export function toNetlinkError (operation: string, err: unknown): NetlinkError {
  if (err instanceof NetlinkError) return err
  return new NetlinkError(operation, errnoOf(err) ?? 'EIO', { cause: err })
}

/** errnos that mean "it is already there" for a create. */
export const ALREADY_EXISTS: ReadonlySet<string> = new Set(['EEXIST'])

/** errnos that mean "it is already gone" for a delete (links: ENODEV; addresses: EADDRNOTAVAIL; routes/rules: ESRCH/ENOENT). */
export const ALREADY_GONE: ReadonlySet<string> = new Set(['ENOENT', 'ENODEV', 'ESRCH', 'EADDRNOTAVAIL', 'ENXIO'])

export function isAlreadyGone (err: unknown): boolean {
  const errno = errnoOf(err)
  return errno !== null && ALREADY_GONE.has(errno)
}

export function isAlreadyExists (err: unknown): boolean {
  const errno = errnoOf(err)
  return errno !== null && ALREADY_EXISTS.has(errno)
}
