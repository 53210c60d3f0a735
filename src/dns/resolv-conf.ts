/**
 * /etc/resolv.conf → the resolver's settings, read the way glibc's res_init reads it (resolv/res_init.c),
 * so the daemon asks the same servers, with the same search list, as every other program in the pod.
 *
 * Pure: the text comes in, settings and the lines that were skipped come out. Never throws.
 *
 * glibc rules kept here:
 * - a keyword counts only at the start of a line; lines starting with `#` or `;` are comments;
 * - `nameserver ADDR`: IPv4 or IPv6 (an IPv6 `%scope` is kept); port 53 always (the file has no port
 *   syntax); at most 3 (MAXNS) — the rest are skipped, with a note;
 * - `domain X` and `search A B …`: whichever comes last wins (`domain X` is a search list of one);
 * - `options ndots:N` (default 1, capped at 15), `timeout:N` seconds (default 5, capped at 30),
 *   `attempts:N` (default 2, capped at 5), `rotate`; other options are ignored, as glibc does.
 *   Unlike glibc, `timeout:0` and `attempts:0` become 1: a resolver that never waits or never
 *   tries is not a setting anyone means.
 * - no usable nameserver at all → 127.0.0.1:53, as glibc and musl do (a node-local cache is the
 *   one place that could answer). `defaulted` says so, so the daemon can warn once at start.
 * Not kept: the search domain glibc derives from the host name when the file has none (that is a
 * host fact, not file content), `sortlist`, and the RES_OPTIONS / LOCALDOMAIN variables.
 */

import { isIP } from 'node:net'

export interface Nameserver {
  readonly address: string
  readonly port: number
}

export interface ResolvConf {
  readonly nameservers: readonly Nameserver[]
  readonly search: readonly string[]
  readonly ndots: number
  readonly timeoutMs: number
  readonly attempts: number
  readonly rotate: boolean
  /** true when the file named no usable nameserver and 127.0.0.1 stands in, as in glibc */
  readonly defaulted: boolean
  /** lines that were skipped, with why (1-based line numbers), for one warning at start */
  readonly skipped: readonly string[]
}

export const RESOLV_DEFAULTS = {
  ndots: 1,
  timeoutMs: 5000,
  attempts: 2,
  maxNameservers: 3,
  maxNdots: 15,
  maxTimeoutS: 30,
  maxAttempts: 5,
  port: 53
} as const

/** An address as glibc accepts it on a nameserver line (IPv6 may carry a `%scope`), or null. */
function nameserverAddress (token: string): string | null {
  if (isIP(token) === 4) return token
  const [addr, scope, ...rest] = token.split('%')
  if (addr === undefined || rest.length > 0 || scope === '' || isIP(addr) !== 6) return null
  const lower = addr.toLowerCase()
  return scope === undefined ? lower : `${lower}%${scope}`
}

function clampInt (value: string, min: number, max: number): number | null {
  if (!/^\d+$/.test(value)) return null
  return Math.min(max, Math.max(min, Number.parseInt(value, 10)))
}

function domainName (text: string): string {
  return text.endsWith('.') && text.length > 1 ? text.slice(0, -1).toLowerCase() : text.toLowerCase()
}

export function parseResolvConf (text: string): ResolvConf {
  const nameservers: Nameserver[] = []
  const skipped: string[] = []
  let search: string[] = []
  let ndots: number = RESOLV_DEFAULTS.ndots
  let timeoutMs: number = RESOLV_DEFAULTS.timeoutMs
  let attempts: number = RESOLV_DEFAULTS.attempts
  let rotate = false

  const lines = text.split(/\r?\n/)
  lines.forEach((line, index) => {
    const where = `line ${index + 1}`
    if (line.startsWith('#') || line.startsWith(';')) return
    const match = /^(\S+)[ \t]*(.*)$/.exec(line)
    if (match === null) return
    const keyword = match[1] ?? ''
    // glibc ignores everything after a comment character on a keyword line as well.
    const args = (match[2] ?? '').replace(/[#;].*$/, '').trim().split(/[ \t]+/).filter(a => a !== '')
    switch (keyword) {
      case 'nameserver': {
        const token = args[0]
        const address = token === undefined ? null : nameserverAddress(token)
        if (address === null) {
          skipped.push(`${where}: '${line.trim()}': not an IP address`)
        } else if (nameservers.length >= RESOLV_DEFAULTS.maxNameservers) {
          skipped.push(`${where}: '${line.trim()}': only the first ${RESOLV_DEFAULTS.maxNameservers} nameservers are used`)
        } else {
          nameservers.push({ address, port: RESOLV_DEFAULTS.port })
        }
        return
      }
      case 'domain':
        search = args.length > 0 ? [domainName(args[0] ?? '')] : []
        return
      case 'search':
        search = args.map(domainName)
        return
      case 'options':
        for (const option of args) {
          const [name, value] = option.split(':', 2)
          if (name === 'rotate' && value === undefined) rotate = true
          else if (name === 'ndots' && value !== undefined) ndots = clampInt(value, 0, RESOLV_DEFAULTS.maxNdots) ?? ndots
          else if (name === 'timeout' && value !== undefined) timeoutMs = (clampInt(value, 1, RESOLV_DEFAULTS.maxTimeoutS) ?? timeoutMs / 1000) * 1000
          else if (name === 'attempts' && value !== undefined) attempts = clampInt(value, 1, RESOLV_DEFAULTS.maxAttempts) ?? attempts
        }
    }
  })

  // `search .` (a root-only list) means no search, as in glibc.
  search = search.filter(d => d !== '.' && d !== '')
  const defaulted = nameservers.length === 0
  if (defaulted) nameservers.push({ address: '127.0.0.1', port: RESOLV_DEFAULTS.port })
  return { nameservers, search, ndots, timeoutMs, attempts, rotate, defaulted, skipped }
}
