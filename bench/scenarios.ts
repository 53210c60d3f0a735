/**
 * One scenario = one router variant on a fresh topology: the daemon in one of its modes, or a peer
 * (hand-written nft, squid, tinyproxy, haproxy, socat, a plain Node forwarder, a plain Node HTTP relay) in
 * the router namespace in its place, on the same addresses, leaving through the same macvlan with the same
 * nft ruleset as the daemon's mode.
 * runScenario never throws: a scenario that cannot start, or a workload that fails, is recorded.
 */
import { mkdtempSync, readFileSync, rmSync, writeFileSync, chmodSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { parseConfig } from '../src/config/config.js'
import { readRawSettings } from '../src/config/env.js'
import { createInterface } from 'node:readline'
import { ROUTER_BIN, startRouter, type LogLine } from '../src/lab/router-process.js'
import { buildTopology, LAB, type Topology } from '../src/lab/topology.js'
import { waitFor } from '../src/lab/wait.js'
import { buildPlan } from '../src/plan/plan.js'
import { haproxyConf, nginxConf, nodeForwardArgv, socatArgv, squidConf, tinyproxyConf, type Forward } from './peer-configs.js'
import { namespacePids, namespaceStats, type ProcStats } from './proc-stats.js'
import type { ScenarioResult } from './report.js'
import { iperf, pinned, startIdleClient, wrk, BOTH_CPUS, ROUTER_CPU, LOAD_CPU, type Pinning } from './workloads.js'

export const SCENARIOS = ['redirect', 'kernel-nft', 'http-proxy', 'squid', 'tinyproxy', 'dns-proxy', 'haproxy', 'socat', 'node-forward', 'node-http-relay', 'dns-proxy-2w', 'haproxy-2t', 'http-proxy-2w', 'dns-proxy-kernel'] as const
export type ScenarioId = typeof SCENARIOS[number]

const A = LAB.v4
const IPERF_PORT = 5201
const HTTP_PORT = 80
const PROXY_PORT = 8080
const SHIM_PORT = 15201
export const NS_PREFIX = 'erbench-'
const NODE_FORWARD = fileURLToPath(new URL('./node-forward.js', import.meta.url))
const NODE_HTTP_RELAY = fileURLToPath(new URL('./node-http-relay.js', import.meta.url))

/** How clients reach the destination: straight at the router (TCP forward) or through a forward proxy. */
type Access = 'tcp' | 'proxy'

interface Spec {
  access: Access
  /** the daemon runs (readiness, setup time) */
  daemon: boolean
  /** idle-tunnel levels this router variant is measured at (none for the kernel paths) */
  idleLevels: readonly number[]
  /** cores the router gets: 1 (CPU 1 alone) or 2 (both, CPU 0 shared with the load) */
  cores: 1 | 2
  /** a proxy without CONNECT: no tunnels, no bulk throughput (iperf3 reaches it only through a tunnel) */
  noConnect?: true
}

const LEVELS = [100, 1000, 10_000]
const SPECS: Record<ScenarioId, Spec> = {
  redirect: { access: 'tcp', daemon: true, idleLevels: [], cores: 1 },
  'kernel-nft': { access: 'tcp', daemon: false, idleLevels: [], cores: 1 },
  'http-proxy': { access: 'proxy', daemon: true, idleLevels: LEVELS, cores: 1 },
  squid: { access: 'proxy', daemon: false, idleLevels: LEVELS, cores: 1 },
  tinyproxy: { access: 'proxy', daemon: false, idleLevels: LEVELS, cores: 1 },
  'dns-proxy': { access: 'tcp', daemon: true, idleLevels: LEVELS, cores: 1 },
  haproxy: { access: 'tcp', daemon: false, idleLevels: LEVELS, cores: 1 },
  // one process per connection: 10,000 would be 10,000 processes
  socat: { access: 'tcp', daemon: false, idleLevels: [100, 1000], cores: 1 },
  // the plain Node forwarder (bench/node-forward.ts): what Node itself costs beside the dns-proxy forwarders
  'node-forward': { access: 'tcp', daemon: false, idleLevels: LEVELS, cores: 1 },
  // the plain Node keep-alive HTTP relay (bench/node-http-relay.ts): no CONNECT, so no tunnels and no bulk
  'node-http-relay': { access: 'proxy', daemon: false, idleLevels: [], cores: 1, noConnect: true },
  // both cores: EGRESS_WORKERS=2 against haproxy with two threads (squid -N runs one process: no peer)
  'dns-proxy-2w': { access: 'tcp', daemon: true, idleLevels: [1000], cores: 2 },
  'haproxy-2t': { access: 'tcp', daemon: false, idleLevels: [1000], cores: 2 },
  'http-proxy-2w': { access: 'proxy', daemon: true, idleLevels: [1000], cores: 2 },
  // EGRESS_DNS_PROXY_FORWARDING=kernel: the forwards, to a host name (dnsmasq on the LAN answers it), are DNAT
  // rules; no process holds the connections
  'dns-proxy-kernel': { access: 'tcp', daemon: true, idleLevels: [], cores: 1 }
}

function routerCpus (spec: Spec): number | string {
  return spec.cores === 2 ? BOTH_CPUS : ROUTER_CPU
}

export interface BenchOptions {
  runs: number
  seconds: number
  wrkConnections: number
  /** the highest idle level to measure */
  maxIdle: number
  pin: Pinning
  say: (line: string) => void
  /** run the daemon under `node --cpu-prof`, writing its profile here */
  profileDir?: string
  /** the hard RLIMIT_NOFILE every process here inherits (a proxy needs two descriptors per tunnel) */
  fdLimit: number
}

/** The environment of the daemon in each mode, as an operator would write it. */
export function daemonEnv (mode: 'redirect' | 'http-proxy' | 'dns-proxy' | 'init', extra: Record<string, string> = {}): Record<string, string> {
  const env: Record<string, string> = {
    EGRESS_ROUTER_MODE: mode,
    EGRESS_SOURCE: `${A.source}/${A.prefixLength}`,
    EGRESS_GATEWAY: A.gateway,
    EGRESS_INTERFACE: LAB.links.routerLan,
    EGRESS_POD_INTERFACE: LAB.links.routerPod,
    EGRESS_HEALTH_ADDRESS: '127.0.0.1:9090',
    EGRESS_DRAIN_TIMEOUT: '1s',
    EGRESS_LOG_LEVEL: 'info',
    // as the image (Containerfile) and the systemd units run it
    MALLOC_ARENA_MAX: '2'
  }
  if (mode === 'redirect' || mode === 'init') env.EGRESS_DESTINATION = `${HTTP_PORT} tcp ${A.dest}\n${IPERF_PORT} tcp ${A.dest}\n`
  if (mode === 'http-proxy') {
    env.EGRESS_HTTP_PROXY_DESTINATION = `${A.dest}\n`
    // squid and tinyproxy run without an access log here (peer-configs.ts): so does the daemon
    env.EGRESS_HTTP_PROXY_ACCESS_LOG = 'off'
  }
  if (mode === 'dns-proxy') env.EGRESS_DNS_PROXY_DESTINATION = `${HTTP_PORT} ${A.dest} ${HTTP_PORT}\n${IPERF_PORT} ${A.dest} ${IPERF_PORT}\n`
  return { ...env, ...extra }
}

/** The nft script the daemon applies in a mode — so a peer runs behind exactly the same rules. */
export function modeNftScript (mode: 'http-proxy' | 'dns-proxy'): string {
  const raw = readRawSettings(daemonEnv(mode), {}, (p) => readFileSync(p, 'utf8'))
  if ('issues' in raw) throw new Error(`bench config: ${JSON.stringify(raw.issues)}`)
  const parsed = parseConfig(raw.settings)
  if (!parsed.ok) throw new Error(`bench config: ${JSON.stringify(parsed.issues)}`)
  const plan = buildPlan(parsed.config, { parent: LAB.links.routerLan, macvlanExists: true, podAddresses: [{ address: A.routerPod, family: 4 }] })
  return plan.nft.script
}

/** The kernel floor: the same DNAT and SNAT, by hand, and nothing else. */
export function kernelNftScript (macvlan: string): string {
  return `table ip bench_kernel {
  chain pre {
    type nat hook prerouting priority dstnat; policy accept;
    iifname "${LAB.links.routerPod}" tcp dport ${HTTP_PORT} dnat to ${A.dest}
    iifname "${LAB.links.routerPod}" tcp dport ${IPERF_PORT} dnat to ${A.dest}
  }
  chain post {
    type nat hook postrouting priority srcnat; policy accept;
    oifname "${macvlan}" snat to ${A.source}
  }
}
`
}

const FORWARDS: Forward[] = [
  { listen: A.routerPod, port: HTTP_PORT, target: A.dest, targetPort: HTTP_PORT },
  { listen: A.routerPod, port: IPERF_PORT, target: A.dest, targetPort: IPERF_PORT }
]

interface Running {
  stop (): Promise<void>
  readyMs?: number
  setupMs?: number
}

async function waitListening (topo: Topology, role: 'router' | 'dest' | 'client' | 'lan', port: number, what: string, timeoutMs = 15_000): Promise<void> {
  await waitFor(async () => {
    const r = await topo.exec(role, ['ss', '-Hltn', `sport = :${port}`], { timeoutMs: 5_000 })
    return r.code === 0 && r.stdout.trim() !== ''
  }, { what, timeoutMs, intervalMs: 50 })
}

/** Pins every thread of every process in the router namespace to the router's CPUs. */
async function pinRouterNs (topo: Topology, pin: Pinning, cpus: number | string): Promise<void> {
  if (!pin.enabled) return
  for (const pid of await namespacePids(topo.ns.router)) {
    await topo.exec('router', ['taskset', '-a', '-p', '-c', String(cpus), String(pid)], { timeoutMs: 5_000 })
  }
}

/**
 * The daemon under `node --cpu-prof` (not allowed in NODE_OPTIONS, so not through startRouter): the same
 * command line with the flags in front, its JSON log read for readiness. The profile is written on exit.
 */
async function startProfiledDaemon (topo: Topology, env: Record<string, string>, profileDir: string): Promise<{ readyLog: LogLine | undefined, rulesLog: LogLine | undefined, stop: () => Promise<void> }> {
  const child = topo.spawn('router', [process.execPath, '--cpu-prof', `--cpu-prof-dir=${profileDir}`, ROUTER_BIN, 'run'], {
    env: { PATH: process.env.PATH ?? '/usr/sbin:/usr/bin:/sbin:/bin', ...env }
  })
  const logs: LogLine[] = []
  if (child.stdout !== null) createInterface({ input: child.stdout }).on('line', (l) => { try { logs.push(JSON.parse(l) as LogLine) } catch { /* not JSON */ } })
  const stop = async (): Promise<void> => {
    child.kill('SIGTERM')
    await waitFor(() => child.exitCode !== null || child.signalCode !== null, { what: 'the profiled daemon to exit', timeoutMs: 15_000 })
      .catch(() => { child.kill('SIGKILL') })
  }
  try {
    const readyLog = await waitFor(() => {
      if (child.exitCode !== null) throw new Error(`the profiled daemon exited (${child.exitCode})`)
      return logs.find((l) => l.event === 'readiness' && l.ready === true)
    }, { what: 'the profiled daemon to be ready', timeoutMs: 30_000 })
    return { readyLog, rulesLog: logs.find((l) => l.event === 'rules'), stop }
  } catch (err) {
    await stop()
    throw err
  }
}

async function startDaemon (topo: Topology, mode: 'redirect' | 'http-proxy' | 'dns-proxy', o: BenchOptions, spec: Spec, extra: Record<string, string> = {}): Promise<Running> {
  const env = daemonEnv(mode, { ...(spec.cores === 2 ? { EGRESS_WORKERS: '2' } : {}), ...extra })
  const spawned = Date.now()
  let ready: LogLine | undefined
  let rules: LogLine | undefined
  let stop: () => Promise<void>
  if (o.profileDir !== undefined) {
    const p = await startProfiledDaemon(topo, env, o.profileDir)
    ready = p.readyLog
    rules = p.rulesLog
    stop = p.stop
  } else {
    const router = startRouter(topo, env)
    try {
      await router.waitReady(30_000)
    } catch (err) {
      await router.stop('SIGKILL', 5_000)
      throw err
    }
    ready = router.logs.find((l) => l.event === 'readiness' && l.ready === true)
    rules = router.logs.find((l) => l.event === 'rules')
    stop = async () => {
      const { code, signal } = await router.stop('SIGTERM', 15_000)
      if (code !== 0) o.say(`bench: the daemon (${mode}) exited with ${String(code ?? signal)}`)
    }
  }
  await pinRouterNs(topo, o.pin, routerCpus(spec))
  return {
    readyMs: typeof ready?.time === 'number' ? ready.time - spawned : undefined,
    setupMs: typeof rules?.setupMs === 'number' ? rules.setupMs : undefined,
    stop
  }
}

/** `EGRESS_ROUTER_MODE=init`: macvlan, address, routes, sysctls and the redirect rules; then exits. */
async function initNetwork (topo: Topology): Promise<void> {
  const init = startRouter(topo, daemonEnv('init'))
  const timer = setTimeout(() => { void init.stop('SIGKILL', 1_000) }, 30_000)
  const { code } = await init.exited
  clearTimeout(timer)
  if (code !== 0) throw new Error(`init mode failed (exit ${String(code)}): ${init.stderr().trim()} ${JSON.stringify(init.logs.slice(-2))}`)
}

async function nftApply (topo: Topology, script: string): Promise<void> {
  await topo.execOk('router', ['nft', '-f', '-'], { input: script, timeoutMs: 15_000 })
}

/** The destination's host name, for the forwards that name it */
const DEST_NAME = 'dest.bench.example'

/** dnsmasq on the gateway (the router's resolv.conf names it), answering DEST_NAME only and forwarding nothing. */
async function startDnsmasq (topo: Topology): Promise<Running> {
  const child = topo.spawn('lan', ['dnsmasq', '--keep-in-foreground', '--no-resolv', '--no-hosts', '--no-poll', '--bind-interfaces',
    `--listen-address=${A.gateway}`, '--port=53', `--host-record=${DEST_NAME},${A.dest}`, '--local=/bench.example/', '--local-ttl=60',
    '--pid-file=', '--user=root'], { stdio: ['ignore', 'ignore', 'ignore'] })
  const stop = async (): Promise<void> => {
    child.kill('SIGTERM')
    await waitFor(() => child.exitCode !== null || child.signalCode !== null, { what: 'dnsmasq to exit', timeoutMs: 5_000 }).catch(() => { child.kill('SIGKILL') })
  }
  await waitListening(topo, 'lan', 53, 'dnsmasq to listen on 53').catch(async (err: unknown) => { await stop(); throw err })
  return { stop }
}

/** Spawns a peer in the router namespace (pinned) and resolves once it listens. */
async function startPeer (topo: Topology, o: BenchOptions, argvs: string[][], port: number, what: string, cpus: number | string = ROUTER_CPU): Promise<Running> {
  const started = Date.now()
  const children = argvs.map((argv) => topo.spawn('router', pinned(o.pin, cpus, argv), { stdio: ['ignore', 'ignore', 'pipe'] }))
  let stderr = ''
  for (const c of children) c.stderr?.on('data', (b: Buffer) => { if (stderr.length < 4000) stderr += b.toString() })
  try {
    await waitFor(() => {
      const dead = children.find((c) => c.exitCode !== null || c.signalCode !== null)
      if (dead !== undefined) throw new Error(`${what} exited (${String(dead.exitCode ?? dead.signalCode)}): ${stderr.trim().slice(0, 500)}`)
      return true
    }, { what, timeoutMs: 1_000 })
    await waitListening(topo, 'router', port, `${what} to listen on ${port}`)
  } catch (err) {
    for (const c of children) c.kill('SIGKILL')
    throw new Error(`${err instanceof Error ? err.message : String(err)}; stderr: ${stderr.trim().slice(0, 500)}`)
  }
  return {
    readyMs: Date.now() - started,
    stop: async () => {
      for (const c of children) c.kill('SIGTERM')
      await waitFor(() => children.every((c) => c.exitCode !== null || c.signalCode !== null), { what: `${what} to exit`, timeoutMs: 10_000 })
        .catch(() => { for (const c of children) c.kill('SIGKILL') })
    }
  }
}

async function startVariant (id: ScenarioId, topo: Topology, dir: string, o: BenchOptions): Promise<Running> {
  const spec = SPECS[id]
  switch (id) {
    case 'redirect': return await startDaemon(topo, 'redirect', o, spec)
    case 'http-proxy':
    case 'http-proxy-2w': return await startDaemon(topo, 'http-proxy', o, spec)
    case 'dns-proxy':
    case 'dns-proxy-2w': return await startDaemon(topo, 'dns-proxy', o, spec)
    case 'dns-proxy-kernel': {
      // the forwards written to a host name, as operators mostly do: the daemon resolves it and DNATs to its address
      const dns = await startDnsmasq(topo)
      const forwards = `${HTTP_PORT} ${DEST_NAME} ${HTTP_PORT}\n${IPERF_PORT} ${DEST_NAME} ${IPERF_PORT}\n`
      const daemon = await startDaemon(topo, 'dns-proxy', o, spec, { EGRESS_DNS_PROXY_FORWARDING: 'kernel', EGRESS_DNS_PROXY_DESTINATION: forwards })
        .catch(async (err: unknown) => { await dns.stop(); throw err })
      return { ...daemon, stop: async () => { await daemon.stop(); await dns.stop() } }
    }
    case 'kernel-nft': {
      await initNetwork(topo)
      await topo.execOk('router', ['nft', 'delete', 'table', 'ip', 'egress_router'], { timeoutMs: 10_000 })
      await nftApply(topo, kernelNftScript('macvlan0'))
      return { stop: async () => {} }
    }
    case 'squid':
    case 'tinyproxy': {
      await initNetwork(topo)
      await nftApply(topo, modeNftScript('http-proxy'))
      const conf = join(dir, `${id}.conf`)
      const opts = { listen: A.routerPod, port: PROXY_PORT, clients: A.clientNet, dir }
      writeFileSync(conf, id === 'squid' ? squidConf(opts) : tinyproxyConf(opts))
      const argv = id === 'squid' ? ['squid', '-N', '-f', conf] : ['tinyproxy', '-d', '-c', conf]
      return await startPeer(topo, o, [argv], PROXY_PORT, id)
    }
    case 'haproxy':
    case 'haproxy-2t': {
      await initNetwork(topo)
      await nftApply(topo, modeNftScript('dns-proxy'))
      const conf = join(dir, 'haproxy.cfg')
      writeFileSync(conf, haproxyConf(FORWARDS, Math.floor((o.fdLimit - 300) / 2), spec.cores))
      return await startPeer(topo, o, [['haproxy', '-db', '-f', conf]], HTTP_PORT, id, routerCpus(spec))
    }
    case 'socat': {
      await initNetwork(topo)
      await nftApply(topo, modeNftScript('dns-proxy'))
      return await startPeer(topo, o, FORWARDS.map(socatArgv), HTTP_PORT, 'socat')
    }
    case 'node-forward': {
      await initNetwork(topo)
      await nftApply(topo, modeNftScript('dns-proxy'))
      return await startPeer(topo, o, [nodeForwardArgv(process.execPath, NODE_FORWARD, A.source, FORWARDS)], HTTP_PORT, id)
    }
    case 'node-http-relay': {
      await initNetwork(topo)
      await nftApply(topo, modeNftScript('http-proxy'))
      return await startPeer(topo, o, [[process.execPath, NODE_HTTP_RELAY, A.routerPod, String(PROXY_PORT), A.source]], PROXY_PORT, id)
    }
  }
}

/** `rps_cpus` text for a taskset CPU list: 1 → "2", "0,1" → "3" (hex bit mask). */
export function rpsMask (cpus: number | string): string {
  return String(cpus).split(',').reduce((m, c) => m | (1 << Number(c)), 0).toString(16)
}

/**
 * Receive packet steering: every packet a namespace receives is processed on that namespace's CPU, the router's
 * on the router's CPU(s), every other namespace's on the load's. Without it a packet is processed in softirq on
 * the CPU that sent it, so the router's kernel work (forwarding, NAT, its TCP receive path) lands mostly on the
 * load's CPU: the kernel paths then cost the router's core nothing and compete with wrk instead.
 */
async function steerReceive (topo: Topology, pin: Pinning, routerCpus: number | string): Promise<void> {
  if (!pin.enabled || pin.steer !== true) return
  for (const role of ['client', 'router', 'lan', 'dest'] as const) {
    const m = rpsMask(role === 'router' ? routerCpus : LOAD_CPU)
    await topo.execOk(role, ['sh', '-c', `for q in /sys/class/net/*/queues/rx-*/rps_cpus; do case "$q" in */lo/*) ;; *) echo ${m} > "$q" ;; esac; done`], { timeoutMs: 5_000 })
  }
}

/** Each namespace: a wide port range and quick TIME_WAIT reuse, so a conn/s run cannot run out of ports. */
async function tuneNamespaces (topo: Topology): Promise<void> {
  for (const role of ['client', 'router', 'lan', 'dest'] as const) {
    await topo.execOk(role, ['sysctl', '-q', '-w', 'net.ipv4.ip_local_port_range=1024 65000', 'net.ipv4.tcp_tw_reuse=1',
      'net.core.somaxconn=4096', 'net.ipv4.tcp_max_syn_backlog=4096'], { timeoutMs: 5_000 })
  }
  // conntrack's TIME_WAIT entries would otherwise pile up towards the (host-wide) table limit across runs
  await topo.exec('router', ['sysctl', '-q', '-w', 'net.netfilter.nf_conntrack_tcp_timeout_time_wait=1'], { timeoutMs: 5_000 })
}

async function startDestination (topo: Topology, dir: string, o: BenchOptions): Promise<void> {
  const conf = join(dir, 'nginx.conf')
  writeFileSync(conf, nginxConf({ listen: A.dest, port: HTTP_PORT, dir }))
  const nginx = topo.spawn('dest', pinned(o.pin, LOAD_CPU, ['nginx', '-c', conf, '-p', dir]), { stdio: ['ignore', 'ignore', 'pipe'] })
  let err = ''
  nginx.stderr?.on('data', (b: Buffer) => { err += b.toString() })
  topo.spawn('dest', pinned(o.pin, LOAD_CPU, ['iperf3', '-s', '-p', String(IPERF_PORT), '-B', A.dest]), { stdio: ['ignore', 'ignore', 'ignore'] })
  await waitListening(topo, 'dest', HTTP_PORT, 'nginx in the destination').catch((e: unknown) => {
    throw new Error(`${e instanceof Error ? e.message : String(e)}; nginx: ${err.trim()}`)
  })
  await waitListening(topo, 'dest', IPERF_PORT, 'iperf3 -s in the destination')
}

/** Through the router, once: the destination must answer and must have seen EGRESS_SOURCE. */
async function smoke (topo: Topology, spec: Spec): Promise<void> {
  const checks = spec.access === 'tcp'
    ? [['curl', '-sS', '--max-time', '5', `http://${A.routerPod}:${HTTP_PORT}/`]]
    : [
        ['curl', '-sS', '--max-time', '5', '-x', `http://${A.routerPod}:${PROXY_PORT}`, `http://${A.dest}/`],
        ...spec.noConnect === true ? [] : [['curl', '-sS', '--max-time', '5', '-p', '-x', `http://${A.routerPod}:${PROXY_PORT}`, `http://${A.dest}/`]]
      ]
  for (const argv of checks) {
    const r = await waitFor(async () => {
      const x = await topo.exec('client', argv, { timeoutMs: 8_000 })
      return x.code === 0 ? x : undefined
    }, { what: `${argv.join(' ')} to succeed`, timeoutMs: 15_000, intervalMs: 200 })
    if (r.stdout.trim() !== A.source) throw new Error(`${argv.join(' ')}: the destination saw '${r.stdout.trim()}', not EGRESS_SOURCE ${A.source}`)
  }
}

function record (result: ScenarioResult, metric: string, value: number): void {
  (result.samples[metric] ??= []).push(value)
}

async function attempt (result: ScenarioResult, metric: string, o: BenchOptions, fn: () => Promise<void>): Promise<void> {
  try {
    await fn()
  } catch (err) {
    const why = err instanceof Error ? err.message : String(err)
    result.failures[metric] ??= why.slice(0, 400)
    o.say(`bench:   ${metric} failed: ${why.slice(0, 200)}`)
  }
}

/** how long the CPU of a router with no connections is measured */
const IDLE_CPU_MS = 5_000

/** Runs fn and returns its result with the CPU the namespace's processes spent meanwhile, as a share of one core. */
async function cpuShareDuring<T> (ns: string, fn: () => Promise<T>): Promise<{ value: T, share: number }> {
  const before = await namespaceStats(ns)
  const started = performance.now()
  const value = await fn()
  return { value, share: ((await namespaceStats(ns)).cpuMs - before.cpuMs) / (performance.now() - started) }
}

/** RSS after it has settled: two readings 300 ms apart within 1 % (at most ~5 s). */
async function settledStats (ns: string): Promise<ProcStats> {
  let last = await namespaceStats(ns)
  for (let i = 0; i < 16; i++) {
    await new Promise((resolve) => setTimeout(resolve, 300))
    const now = await namespaceStats(ns)
    const stable = Math.abs(now.rssKiB - last.rssKiB) <= last.rssKiB * 0.01
    last = now
    if (stable) break
  }
  return last
}

async function idleCurve (topo: Topology, spec: Spec, result: ScenarioResult, o: BenchOptions): Promise<void> {
  // two descriptors per tunnel in a proxy, and a margin for listeners, logs and the like
  const fdCap = Math.floor((o.fdLimit - 300) / 2)
  const levels = [...new Set(spec.idleLevels.filter((n) => n <= o.maxIdle).map((n) => Math.min(n, fdCap)))]
  if (spec.idleLevels.some((n) => n > fdCap && n <= o.maxIdle)) result.notes.push(`top idle level capped at ${fdCap} tunnels by the descriptor limit (${o.fdLimit}; a proxy needs two per tunnel)`)
  if (levels.length === 0) return
  const base = await settledStats(topo.ns.router)
  record(result, 'rssIdle', base.rssKiB / 1024)
  result.notes.push(`idle: ${base.pids} process(es), PSS ${(base.pssKiB / 1024).toFixed(1)} MiB with no connections`)
  // what the router spends doing nothing (timers, self-healing checks): clock ticks are 10 ms, so 5 s resolve 0.2 %
  const quiet = await cpuShareDuring(topo.ns.router, async () => { await new Promise((resolve) => setTimeout(resolve, IDLE_CPU_MS)) })
  record(result, 'cpuIdle', quiet.share * 100)
  const client = startIdleClient(topo, o.pin, spec.access === 'proxy'
    ? { host: A.routerPod, port: PROXY_PORT, connect: `${A.dest}:${HTTP_PORT}` }
    : { host: A.routerPod, port: HTTP_PORT })
  try {
    let before = base
    let held = 0
    for (const n of levels) {
      const metric = n > 1000 ? 'rss10k' : n >= 1000 ? 'rss1k' : 'rss100'
      await attempt(result, metric, o, async () => {
        const report = await client.open(n, 120_000)
        const after = await settledStats(topo.ns.router)
        const opened = report.total - held
        held = report.total
        if (report.total < n) throw new Error(`held ${report.total} of ${n} tunnels (${report.failed} failed, ${report.dropped} dropped; first error: ${report.firstError ?? '-'})`)
        record(result, metric, after.rssKiB / 1024)
        const suffix = n > 1000 ? '10k' : n >= 1000 ? '1k' : ''
        if (suffix !== '') {
          record(result, `kibPerConn${suffix}`, (after.rssKiB - base.rssKiB) / n)
          record(result, `cpuUsPerConn${suffix}`, opened > 0 ? (after.cpuMs - before.cpuMs) * 1000 / opened : Number.NaN)
        }
        result.notes.push(`${n} tunnels: opened in ${report.ms} ms, ${after.pids} process(es), RSS ${(after.rssKiB / 1024).toFixed(1)} MiB, PSS ${(after.pssKiB / 1024).toFixed(1)} MiB, CPU ${(after.cpuMs - before.cpuMs).toFixed(0)} ms`)
        before = after
      })
      if (result.failures[metric] !== undefined) break
    }
  } finally {
    await client.close()
  }
}

/** wrk seconds per request workload before measuring (discarded) */
const WARMUP_SECONDS = 5

async function traffic (topo: Topology, spec: Spec, result: ScenarioResult, dir: string, o: BenchOptions): Promise<void> {
  const proxy = spec.access === 'proxy'
  let shim: ReturnType<Topology['spawn']> | null = null
  const bulk = spec.noConnect !== true
  if (proxy && bulk) {
    // iperf3 speaks no HTTP: a CONNECT forward in the client namespace (socat's PROXY address) carries it
    shim = topo.spawn('client', pinned(o.pin, LOAD_CPU, ['socat', '-b', '131072', `TCP-LISTEN:${SHIM_PORT},bind=127.0.0.1,fork,reuseaddr`,
      `PROXY:${A.routerPod}:${A.dest}:${IPERF_PORT},proxyport=${PROXY_PORT}`]), { stdio: ['ignore', 'ignore', 'ignore'] })
    await waitListening(topo, 'client', SHIM_PORT, 'the CONNECT shim')
  }
  const iperfTarget = proxy ? { host: '127.0.0.1', port: SHIM_PORT } : { host: A.routerPod, port: IPERF_PORT }
  const wrkTarget = proxy
    ? { url: `http://${A.routerPod}:${PROXY_PORT}/`, path: `http://${A.dest}/` }
    : { url: `http://${A.routerPod}:${HTTP_PORT}/`, path: '/' }
  try {
    // Warm-up, every peer alike, results discarded: a JIT compiles its hot paths and pools fill during the
    // first seconds (p99 225 ms in the first 3 s of load, 5 ms after 6 s), which a measurement from the first request would report.
    for (const close of [true, false]) {
      try {
        await wrk(topo, o.pin, { ...wrkTarget, host: A.dest, close, connections: o.wrkConnections, seconds: WARMUP_SECONDS, dir })
      } catch (err) {
        result.notes.push(`warm-up (${close ? 'Connection: close' : 'keep-alive'}) failed: ${(err as Error).message}`)
      }
    }
    for (let run = 1; run <= o.runs; run++) {
      o.say(`bench:   run ${run}/${o.runs}`)
      for (const streams of bulk ? [1, 4] : []) {
        await attempt(result, `tcp${streams}`, o, async () => {
          // the router's CPU while it carries the stream(s): near 100% per core it is the limit, well below it the
          // limit is elsewhere (the load's CPU, the CONNECT shim)
          const { value: r, share: cpu } = await cpuShareDuring(topo.ns.router, async () => await iperf(topo, o.pin, { ...iperfTarget, streams, seconds: o.seconds }))
          record(result, `tcp${streams}`, r.gbps)
          // numbered across rounds (each round runs a scenario once)
          const nth = result.samples[`tcp${streams}`]?.length ?? 0
          result.notes.push(`bulk ${streams} stream${streams > 1 ? 's' : ''} sample ${nth}: ${r.gbps.toFixed(2)} Gbit/s, router CPU ${(100 * cpu).toFixed(0)}%`)
        })
      }
      for (const close of [true, false]) {
        const metric = close ? 'connPerSec' : 'reqPerSec'
        await attempt(result, metric, o, async () => {
          const r = await wrk(topo, o.pin, { ...wrkTarget, host: A.dest, close, connections: o.wrkConnections, seconds: o.seconds, dir })
          record(result, metric, r.rps)
          record(result, close ? 'closeP50' : 'kaP50', r.p50Ms)
          record(result, close ? 'closeP99' : 'kaP99', r.p99Ms)
          const errors = r.socketErrors + r.badStatus
          if (errors > 0) result.notes.push(`${metric} run ${run}: ${r.socketErrors} socket errors, ${r.badStatus} non-2xx of ${r.requests}`)
        })
      }
    }
  } finally {
    if (shim !== null) shim.kill('SIGTERM')
  }
}

/** An empty result, for runScenario to add rounds to. */
export function newResult (id: ScenarioId): ScenarioResult {
  return { id, ok: false, samples: {}, failures: {}, notes: [] }
}

/**
 * One round of a scenario: a fresh topology and router, its warm-up, and `o.runs` measurements of every workload
 * (the caller interleaves rounds of all scenarios, one run each, so that a host whose speed drifts during the
 * bench slows every scenario of a round alike). The idle-tunnel curve is measured in the round given `idle`.
 * Samples are added to `result`; a round that fails leaves `ok` false and says why.
 */
export async function runScenario (id: ScenarioId, o: BenchOptions, round: { result?: ScenarioResult, idle?: boolean, label?: string } = {}): Promise<ScenarioResult> {
  const result = round.result ?? newResult(id)
  const spec = SPECS[id]
  const dir = mkdtempSync(join(tmpdir(), `erbench-${id}-`))
  // squid and tinyproxy drop to an unprivileged user that must write their logs here
  chmodSync(dir, 0o777)
  let topo: Topology | null = null
  let running: Running | null = null
  const started = Date.now()
  o.say(`bench: ${id}${round.label !== undefined ? ` (${round.label})` : ''}`)
  try {
    topo = await buildTopology({ prefix: NS_PREFIX, dnsResolvConf: `nameserver ${A.gateway}\noptions timeout:1 attempts:1\n` })
    await tuneNamespaces(topo)
    await steerReceive(topo, o.pin, routerCpus(spec))
    await startDestination(topo, dir, o)
    running = await startVariant(id, topo, dir, o)
    if (running.setupMs !== undefined) record(result, 'setupMs', running.setupMs)
    if (running.readyMs !== undefined && spec.daemon) record(result, 'readyMs', running.readyMs)
    await smoke(topo, spec)
    if (round.idle !== false) await idleCurve(topo, spec, result, o)
    await traffic(topo, spec, result, dir, o)
    // what the load left behind: a heap grown under churn (V8's young generation, allocator arenas) stays grown
    if (spec.idleLevels.length > 0) record(result, 'rssAfterLoad', (await settledStats(topo.ns.router)).rssKiB / 1024)
    // ok while no round so far failed (a failed one set the error)
    if (result.error === undefined) result.ok = true
  } catch (err) {
    result.ok = false
    result.error = (err instanceof Error ? err.message : String(err)).slice(0, 600)
    o.say(`bench:   ${id} FAILED: ${result.error ?? ''}`)
  } finally {
    if (running !== null) await running.stop().catch(() => {})
    if (topo !== null) await topo.destroy().catch((e: unknown) => { o.say(`bench: teardown of ${id}: ${String(e)}`) })
    rmSync(dir, { recursive: true, force: true })
    o.say(`bench:   ${id} done in ${((Date.now() - started) / 1000).toFixed(0)} s`)
  }
  return result
}
