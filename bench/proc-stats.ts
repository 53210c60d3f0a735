/**
 * Memory and CPU of "the router": every process in the router namespace (the daemon is one process; a
 * peer may be several — socat forks per connection, squid and haproxy may keep helpers), read from
 * /proc. RSS counts shared pages once per process, as `ps` does; PSS splits them, which is fairer to
 * forking peers, so both are kept.
 */
import { readdirSync, readFileSync } from 'node:fs'
import { run } from '../src/lab/exec.js'

export interface ProcStats {
  pids: number
  rssKiB: number
  pssKiB: number
  /** user + system CPU time so far, in ms */
  cpuMs: number
}

export const CLOCK_TICKS_PER_S = 100

/** Equivalent to: ip netns pids NS */
export async function namespacePids (ns: string): Promise<number[]> {
  const r = await run(['ip', 'netns', 'pids', ns], { timeoutMs: 5_000 })
  return r.stdout.split(/\s+/).filter((s) => /^\d+$/.test(s)).map(Number)
}

/**
 * `/proc/PID/stat` fields 14 to 17, after the parenthesised command name: the process's own CPU (utime, stime) and
 * that of its children it has waited for (cutime, cstime). Without the children's, a router that forks per connection
 * (socat) loses the CPU of every child that exits during a measurement (it read -61 % of a core), and a daemon's
 * nft runs would not count. A child that has exited but is not yet waited for is counted by procStats.
 */
export function parseStatCpuTicks (stat: string): number {
  const rest = stat.slice(stat.lastIndexOf(')') + 2).split(' ')
  // rest[0] is field 3 (state): utime is field 14 → rest[11], stime 15 → rest[12], cutime 16 → rest[13], cstime 17 → rest[14]
  return Number(rest[11]) + Number(rest[12]) + Number(rest[13]) + Number(rest[14])
}

/** A `kB` line of /proc/PID/status or smaps_rollup (`VmRSS:   1234 kB`). */
export function kbField (text: string, name: string): number {
  const m = new RegExp(`^${name}:\\s+(\\d+) kB`, 'm').exec(text)
  return m === null ? 0 : Number(m[1])
}

/** The state field of a `/proc/PID/stat` text (`R`, `S`, `Z`, …). */
export function statState (stat: string): string {
  return stat.slice(stat.lastIndexOf(')') + 2, stat.lastIndexOf(')') + 3)
}

/**
 * Children of `pid` that have exited and wait to be reaped (zombies). A zombie is in no namespace any more, so
 * `ip netns pids` leaves it out; its CPU would drop out of the sum until its parent waits for it, and then come back
 * at once in the parent's cutime.
 */
export function zombieChildren (pid: number): Array<{ pid: number, cpuTicks: number }> {
  const out: Array<{ pid: number, cpuTicks: number }> = []
  try {
    for (const tid of readdirSync(`/proc/${pid}/task`)) {
      for (const c of readFileSync(`/proc/${pid}/task/${tid}/children`, 'utf8').split(' ')) {
        if (!/^\d+$/.test(c)) continue
        try {
          const stat = readFileSync(`/proc/${c}/stat`, 'utf8')
          if (statState(stat) === 'Z') out.push({ pid: Number(c), cpuTicks: parseStatCpuTicks(stat) })
        } catch { /* reaped meanwhile */ }
      }
    }
  } catch { /* exited meanwhile */ }
  return out
}

export function procStats (pids: readonly number[]): ProcStats {
  const total: ProcStats = { pids: 0, rssKiB: 0, pssKiB: 0, cpuMs: 0 }
  const listed = new Set(pids)
  for (const pid of pids) {
    for (const z of zombieChildren(pid)) if (!listed.has(z.pid)) total.cpuMs += z.cpuTicks * 1000 / CLOCK_TICKS_PER_S
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
