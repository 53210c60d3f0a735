/**
 * The bench's tools: installs the missing ones with apt-get, and makes sure no system instance of a
 * peer is left running — Debian's squid, tinyproxy, haproxy and nginx packages start one on install
 * (where services may start), and it would take the CPU and ports the bench measures.
 */
import { readFileSync } from 'node:fs'
import { run } from '../src/lab/exec.js'
import { onPath } from '../src/on-path.js'

/** binary → the Debian package that has it */
export const TOOL_PACKAGES: Readonly<Record<string, string>> = {
  iperf3: 'iperf3',
  wrk: 'wrk',
  socat: 'socat',
  squid: 'squid',
  tinyproxy: 'tinyproxy',
  haproxy: 'haproxy',
  nginx: 'nginx-light',
  dnsmasq: 'dnsmasq-base',
  nft: 'nftables',
  taskset: 'util-linux',
  prlimit: 'util-linux',
  ss: 'iproute2'
}

/** Debian service → the pid file its init script writes */
const SERVICES: Readonly<Record<string, string>> = {
  squid: '/run/squid.pid',
  tinyproxy: '/run/tinyproxy/tinyproxy.pid',
  haproxy: '/run/haproxy.pid',
  nginx: '/run/nginx.pid'
}

/** On $PATH or in the usual system directories (a root shell's PATH may lack the sbin ones). */
function which (binary: string): boolean {
  return onPath(binary, `${process.env.PATH ?? ''}:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin`) !== null
}

/** Installs what is missing. Returns the packages it installed; throws when apt-get fails. */
export async function ensureTools (say: (line: string) => void): Promise<string[]> {
  const missing = new Set<string>()
  for (const [binary, pkg] of Object.entries(TOOL_PACKAGES)) {
    if (!which(binary)) missing.add(pkg)
  }
  if (missing.size === 0) return []
  const pkgs = [...missing].sort()
  say(`bench: installing ${pkgs.join(' ')} with apt-get`)
  const env = { ...process.env, DEBIAN_FRONTEND: 'noninteractive' }
  const update = await run(['apt-get', 'update', '-qq'], { env, timeoutMs: 300_000 })
  if (update.code !== 0) say(`bench: apt-get update failed (${update.stderr.trim().split('\n').pop() ?? ''}); trying the install anyway`)
  const install = await run(['apt-get', 'install', '-y', '-q', '--no-install-recommends', ...pkgs], { env, timeoutMs: 600_000 })
  if (install.code !== 0) throw new Error(`apt-get install ${pkgs.join(' ')} failed: ${install.stderr.trim().split('\n').slice(-3).join(' / ')}`)
  await stopSystemServices(say)
  return pkgs
}

function alive (pid: number): boolean {
  try { process.kill(pid, 0); return true } catch { return false }
}

/**
 * Stops the system instance of each peer service that is running, by its own pid file: `service X
 * stop` where there is one, else SIGTERM to that pid (the host has no systemd in a container).
 */
export async function stopSystemServices (say: (line: string) => void): Promise<void> {
  for (const [service, pidFile] of Object.entries(SERVICES)) {
    let pid: number
    try {
      pid = Number(readFileSync(pidFile, 'utf8').trim())
    } catch { continue }
    if (!Number.isInteger(pid) || pid <= 1 || !alive(pid)) continue
    say(`bench: stopping the system ${service} (pid ${pid}) that its package started`)
    await run(['service', service, 'stop'], { timeoutMs: 30_000 }).catch(() => null)
    if (alive(pid)) {
      try { process.kill(pid, 'SIGTERM') } catch { /* gone */ }
    }
  }
}

/** Versions of the tools, for the JSON report. */
export async function toolVersions (): Promise<Record<string, string>> {
  const probes: Record<string, string[]> = {
    iperf3: ['iperf3', '-v'],
    wrk: ['wrk', '-v'],
    squid: ['squid', '-v'],
    tinyproxy: ['tinyproxy', '-v'],
    haproxy: ['haproxy', '-v'],
    nginx: ['nginx', '-v'],
    socat: ['socat', '-V'],
    nft: ['nft', '--version']
  }
  const out: Record<string, string> = {}
  for (const [name, argv] of Object.entries(probes)) {
    const r = await run(argv, { timeoutMs: 5_000 }).catch(() => null)
    const text = `${r?.stdout ?? ''}\n${r?.stderr ?? ''}`
    out[name] = (text.split('\n').find((l) => /\d+\.\d+/.test(l)) ?? '?').trim().slice(0, 100)
  }
  return out
}
