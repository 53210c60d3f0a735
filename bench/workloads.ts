/**
 * The workloads, each run from the client namespace against the router: iperf3 (bulk TCP), wrk (new
 * connections with `Connection: close`, and keep-alive requests), and the idle-tunnel holder. Each call
 * is bounded by its own deadline and returns parsed figures or throws with the tool's own words.
 */
import type { ChildProcess } from 'node:child_process'
import { writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { createInterface } from 'node:readline'
import type { Topology } from '../src/lab/topology.js'
import { waitFor } from '../src/lab/wait.js'
import type { OpenReport } from './idle-client.js'
import { parseIperf3, parseWrk, type IperfResult, type WrkResult } from './report.js'
import { wrkScript } from './wrk-script.js'

const IDLE_CLIENT = fileURLToPath(new URL('./idle-client.js', import.meta.url))

/**
 * Pinning: the router gets CPU 1, everything else (load generators, destination) CPU 0. The two-core
 * variants (EGRESS_WORKERS=2, haproxy nbthread 2) get both, sharing CPU 0 with the load.
 */
export interface Pinning {
  enabled: boolean
  /** also steer each namespace's received packets to its CPU (receive packet steering) */
  steer?: boolean
}
export const LOAD_CPU = 0
export const ROUTER_CPU = 1
export const BOTH_CPUS = '0,1'

export function pinned (pin: Pinning, cpu: number | string, argv: readonly string[]): string[] {
  return pin.enabled ? ['taskset', '-c', String(cpu), ...argv] : [...argv]
}

export async function iperf (topo: Topology, pin: Pinning, o: { host: string, port: number, streams: number, seconds: number }): Promise<IperfResult> {
  const argv = pinned(pin, LOAD_CPU, ['iperf3', '-c', o.host, '-p', String(o.port), '-P', String(o.streams), '-t', String(o.seconds),
    '-J', '--connect-timeout', '3000'])
  const r = await topo.exec('client', argv, { timeoutMs: (o.seconds + 20) * 1000 })
  if (r.timedOut) throw new Error(`iperf3 did not finish within ${o.seconds + 20} s`)
  return parseIperf3(r.stdout)
}

export interface WrkOptions {
  url: string
  path: string
  host: string
  close: boolean
  connections: number
  seconds: number
  /** where to write the Lua script */
  dir: string
}

export async function wrk (topo: Topology, pin: Pinning, o: WrkOptions): Promise<WrkResult> {
  const script = join(o.dir, `wrk-${o.close ? 'close' : 'keepalive'}.lua`)
  writeFileSync(script, wrkScript({ path: o.path, host: o.host, close: o.close }))
  const argv = pinned(pin, LOAD_CPU, ['wrk', '-t1', `-c${o.connections}`, `-d${o.seconds}s`, '--timeout', '5s', '-s', script, o.url])
  const r = await topo.exec('client', argv, { timeoutMs: (o.seconds + 20) * 1000 })
  const parsed = parseWrk(r.stdout)
  if (parsed === null) throw new Error(`wrk printed no result (exit ${String(r.code)}): ${(r.stderr || r.stdout).trim().slice(0, 300)}`)
  if (parsed.requests === 0) throw new Error(`wrk completed no request: ${parsed.socketErrors} socket errors`)
  return parsed
}

/** The idle-tunnel holder in the client namespace; `open(n)` brings it to n tunnels. */
export interface IdleClient {
  open (total: number, deadlineMs: number): Promise<OpenReport>
  close (): Promise<void>
}

export function startIdleClient (topo: Topology, pin: Pinning, o: { host: string, port: number, connect?: string }): IdleClient {
  const argv = pinned(pin, LOAD_CPU, [process.execPath, IDLE_CLIENT, o.host, String(o.port), ...(o.connect === undefined ? [] : [o.connect])])
  const child: ChildProcess = topo.spawn('client', argv, { stdio: ['pipe', 'pipe', 'pipe'] })
  const reports: OpenReport[] = []
  let stderr = ''
  child.stderr?.on('data', (b: Buffer) => { stderr += b.toString() })
  if (child.stdout !== null) {
    createInterface({ input: child.stdout }).on('line', (line) => {
      try { reports.push(JSON.parse(line) as OpenReport) } catch { /* not a report */ }
    })
  }
  return {
    async open (total, deadlineMs) {
      const before = reports.length
      child.stdin?.write(`open ${total} ${deadlineMs}\n`)
      return await waitFor(() => {
        if (child.exitCode !== null || child.signalCode !== null) throw new Error(`idle client exited: ${stderr.trim()}`)
        return reports[before]
      }, { what: `${total} idle tunnels`, timeoutMs: deadlineMs + 15_000, intervalMs: 50 })
    },
    async close () {
      child.stdin?.end()
      await waitFor(() => child.exitCode !== null || child.signalCode !== null, { what: 'the idle client to exit', timeoutMs: 10_000 })
        .catch(() => { child.kill('SIGKILL') })
    }
  }
}
