/**
 * After a reload changed where a redirect goes, conntrack entries that still point at the old destination are
 * deleted: a UDP flow keeps its DNAT for as long as packets keep coming, so without this a client would keep
 * talking to the old destination forever (a known Kubernetes outage pattern). Uses conntrack-tools when it is
 * installed; without it, says so once and leaves the entries to time out.
 */
import { execFile } from 'node:child_process'
import type { Logger } from 'pino'
import type { RedirectConfig } from '../config/types.js'

export interface ConntrackDeletion {
  readonly protocol: 'tcp' | 'udp' | null
  readonly port: number | null
  /** the old DNAT target: the reply direction's source */
  readonly replySource: string
  readonly family: 4 | 6
}

function target (r: RedirectConfig, protocol: 'tcp' | 'udp', port: number): string | null {
  const rule = r.rules.find((x) => x.protocol === protocol && x.port === port)
  if (rule !== undefined) return `${rule.target.address}:${rule.targetPort}`
  return r.fallback === null ? null : `${r.fallback.target.address}:*`
}

/** Pure: which flows point at a destination that the new configuration no longer sends them to. */
export function staleFlows (before: RedirectConfig, after: RedirectConfig): ConntrackDeletion[] {
  const out: ConntrackDeletion[] = []
  for (const rule of before.rules) {
    if (target(after, rule.protocol, rule.port) !== `${rule.target.address}:${rule.targetPort}`) {
      out.push({ protocol: rule.protocol, port: rule.port, replySource: rule.target.address, family: rule.target.family })
    }
  }
  const fb = before.fallback
  if (fb !== null && (after.fallback === null || after.fallback.target.address !== fb.target.address)) {
    out.push({ protocol: null, port: null, replySource: fb.target.address, family: fb.target.family })
  }
  return out
}

/** `conntrack -D [-p P --orig-port-dst N] --reply-src OLD -f ipv4|ipv6` */
export function conntrackArgs (d: ConntrackDeletion): string[] {
  const args = ['-D', '-f', d.family === 4 ? 'ipv4' : 'ipv6']
  if (d.protocol !== null) args.push('-p', d.protocol)
  if (d.port !== null) args.push('--orig-port-dst', String(d.port))
  args.push('--reply-src', d.replySource)
  return args
}

let missingLogged = false

export async function deleteStaleConntrack (before: RedirectConfig, after: RedirectConfig, logger: Logger): Promise<number> {
  let deleted = 0
  for (const d of staleFlows(before, after)) {
    const result = await new Promise<{ code: number, stderr: string, missing: boolean }>((resolve) => {
      execFile('conntrack', conntrackArgs(d), { timeout: 5000 }, (err, _stdout, stderr) => {
        const e = err as (NodeJS.ErrnoException & { code?: number | string }) | null
        resolve({ code: e === null ? 0 : typeof e.code === 'number' ? e.code : 1, stderr, missing: e?.code === 'ENOENT' })
      })
    })
    if (result.missing) {
      if (!missingLogged) logger.warn({ event: 'conntrack-missing' }, 'conntrack (conntrack-tools) is not installed: flows to changed destinations are left to time out')
      missingLogged = true
      return 0
    }
    const m = /(\d+) flow entries have been deleted/.exec(result.stderr)
    if (m !== null) deleted += Number(m[1])
    else if (result.code !== 0) logger.warn({ event: 'conntrack-failed', args: conntrackArgs(d), stderr: result.stderr.trim() }, 'conntrack -D failed')
  }
  return deleted
}

// ---- flows carrying our mark (host routing: the drain before cleanup) ---------------------------

/** One line of `conntrack -L`: what the drain needs to know of a flow. */
export interface ConntrackFlow {
  readonly protocol: string
  /** seconds until the kernel forgets the entry */
  readonly timeoutS: number
  /** TCP state (ESTABLISHED, TIME_WAIT, …); null for protocols without one */
  readonly state: string | null
  readonly assured: boolean
}

/** Pure: parses `conntrack -L` lines (`tcp 6 431999 ESTABLISHED src=… [ASSURED] mark=25970 use=1`). */
export function parseConntrackList (text: string): ConntrackFlow[] {
  const out: ConntrackFlow[] = []
  for (const line of text.split('\n')) {
    const f = line.trim().split(/\s+/)
    if (f.length < 4) continue
    const timeoutS = Number(f[2])
    if (!Number.isFinite(timeoutS)) continue
    const state = /^[A-Z_]+$/.test(f[3] as string) ? f[3] as string : null
    out.push({ protocol: f[0] as string, timeoutS, state, assured: line.includes('[ASSURED]') })
  }
  return out
}

/** UDP timeouts of the namespace (sysctl nf_conntrack_udp_timeout[_stream]); the kernel defaults when unreadable. */
export interface UdpTimeouts { readonly unreplied: number, readonly stream: number }

/**
 * Pure: is a flow still carrying traffic? TCP: any state but TIME_WAIT and CLOSE (a half-closed connection still
 * moves data). UDP and others have no state: a flow counts as live when a packet passed within `recentS`, told by
 * how much of its timeout is left (every packet resets it to the full timeout).
 */
export function isLiveFlow (f: ConntrackFlow, udp: UdpTimeouts, recentS = 5): boolean {
  if (f.state !== null) return f.state !== 'TIME_WAIT' && f.state !== 'CLOSE'
  const full = f.protocol === 'udp' && f.assured ? udp.stream : udp.unreplied
  return f.timeoutS > full - recentS
}

function conntrack (args: readonly string[]): Promise<{ code: number, stdout: string, stderr: string, missing: boolean }> {
  return new Promise((resolve) => {
    execFile('conntrack', [...args], { timeout: 5000, maxBuffer: 64 * 1024 * 1024 }, (err, stdout, stderr) => {
      const e = err as (NodeJS.ErrnoException & { code?: number | string }) | null
      resolve({ code: e === null ? 0 : typeof e.code === 'number' ? e.code : 1, stdout, stderr, missing: e?.code === 'ENOENT' })
    })
  })
}

/** Equivalent to: conntrack -L -f ipv4|ipv6 -m MARK. Null when conntrack-tools is not installed or the listing failed. */
export async function listMarkedFlows (family: 4 | 6, mark: number): Promise<ConntrackFlow[] | null> {
  const r = await conntrack(['-L', '-f', family === 4 ? 'ipv4' : 'ipv6', '-m', String(mark)])
  if (r.missing || r.code !== 0) return null
  return parseConntrackList(r.stdout)
}

/** Equivalent to: conntrack -D -f ipv4|ipv6 -m MARK. Returns how many entries went (0 when none, or no conntrack). */
export async function deleteMarkedFlows (family: 4 | 6, mark: number): Promise<number> {
  const r = await conntrack(['-D', '-f', family === 4 ? 'ipv4' : 'ipv6', '-m', String(mark)])
  const m = /(\d+) flow entries have been deleted/.exec(r.stderr)
  return m === null ? 0 : Number(m[1])
}
