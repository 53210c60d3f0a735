/**
 * /proc/sys reads and writes. /proc/sys/net is per network namespace by nature: the process sees
 * the namespace it runs in. Writes are idempotent (the same value again changes nothing) and
 * report the old value so the caller can register the undo.
 */
import { readFile, writeFile } from 'node:fs/promises'
import { NetlinkError } from '../errors.js'

export const PROC_SYS = '/proc/sys'

/** `net/ipv4/conf/eth0/arp_notify` → `/proc/sys/net/ipv4/conf/eth0/arp_notify`; refuses `..` and absolute paths. */
export function sysctlFile (path: string, root = PROC_SYS): string {
  const clean = path.replace(/^\/+/, '')
  if (clean === '' || clean.split('/').some(p => p === '..' || p === '.' || p === '')) {
    throw new TypeError(`not a sysctl path: '${path}'`)
  }
  return `${root}/${clean}`
}

function fail (operation: string, err: unknown): NetlinkError {
  const code = (err as { code?: unknown }).code
  return new NetlinkError(operation, typeof code === 'string' ? code : 'EIO', { cause: err })
}

/** The value with surrounding whitespace trimmed (the kernel appends a newline). */
export async function readSysctl (path: string, root = PROC_SYS): Promise<string> {
  try {
    return (await readFile(sysctlFile(path, root), 'utf8')).trim()
  } catch (err) {
    throw fail(`read sysctl ${path}`, err)
  }
}

export interface SysctlChange {
  readonly path: string
  /** false when it already had the value */
  readonly changed: boolean
  readonly old: string
}

/** Equivalent to: sysctl -w path=value, skipped when it already holds value. */
export async function writeSysctl (path: string, value: string, root = PROC_SYS): Promise<SysctlChange> {
  const old = await readSysctl(path, root)
  if (old === value.trim()) return { path, changed: false, old }
  try {
    await writeFile(sysctlFile(path, root), `${value.trim()}\n`)
  } catch (err) {
    throw fail(`write sysctl ${path}=${value}`, err)
  }
  return { path, changed: true, old }
}
