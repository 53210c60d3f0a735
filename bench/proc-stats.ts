/**
 * Memory and CPU of "the router": every process in the router namespace (the daemon is one process; a
 * peer may be several — socat forks per connection, squid and haproxy may keep helpers), read from
 * /proc. RSS counts shared pages once per process, as `ps` does; PSS splits them, which is fairer to
 * forking peers, so both are kept.
 */
import { readFileSync } from 'node:fs'
import { run } from '../src/lab/exec.js'

export interface ProcStats {
  pids: number
  rssKiB: number
  pssKiB: number
  /** user + system CPU time so far, in ms */
  cpuMs: number
}

const CLOCK_TICKS_PER_S = 100

/** Equivalent to: ip netns pids NS */
export async function namespacePids (ns: string): Promise<number[]> {
  const r = await run(['ip', 'netns', 'pids', ns], { timeoutMs: 5_000 })
  return r.stdout.split(/\s+/).filter((s) => /^\d+$/.test(s)).map(Number)
}

/** `/proc/PID/stat` fields 14 and 15 (utime, stime), after the parenthesised command name. */
export function parseStatCpuTicks (stat: string): number {
  const rest = stat.slice(stat.lastIndexOf(')') + 2).split(' ')
  // rest[0] is field 3 (state): utime is field 14 → rest[11], stime field 15 → rest[12]
  return Number(rest[11]) + Number(rest[12])
}

/** A `kB` line of /proc/PID/status or smaps_rollup (`VmRSS:   1234 kB`). */
export function kbField (text: string, name: string): number {
  const m = new RegExp(`^${name}:\\s+(\\d+) kB`, 'm').exec(text)
  return m === null ? 0 : Number(m[1])
}

export function procStats (pids: readonly number[]): ProcStats {
  const total: ProcStats = { pids: 0, rssKiB: 0, pssKiB: 0, cpuMs: 0 }
  for (const pid of pids) {
    try {
      const status = readFileSync(`/proc/${pid}/status`, 'utf8')
      const stat = readFileSync(`/proc/${pid}/stat`, 'utf8')
      let pss = 0
      try { pss = kbField(readFileSync(`/proc/${pid}/smaps_rollup`, 'utf8'), 'Pss') } catch { /* kernel without smaps_rollup */ }
      total.rssKiB += kbField(status, 'VmRSS')
      total.pssKiB += pss
      total.cpuMs += parseStatCpuTicks(stat) * 1000 / CLOCK_TICKS_PER_S
      total.pids++
    } catch { /* exited meanwhile */ }
  }
  return total
}

export async function namespaceStats (ns: string): Promise<ProcStats> {
  return procStats(await namespacePids(ns))
}
