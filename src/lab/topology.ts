/**
 * The namespace test bed shared by `egress-router lab` and the end-to-end tests: four throw-away
 * network namespaces wired like a pod, its node's LAN with a gateway, and a destination network.
 *
 *  client ns            router ns                         lan ns (gateway)            dest ns
 *  c0 198.51.100.2/24 ─ eth0 198.51.100.1/24 (pod side)
 *    default via .1     lan0 192.0.2.2/24  ───────────────  r0 192.0.2.1/24 (fwd on)
 *                       default via 192.0.2.1 dev lan0      d0 203.0.113.1/24 ──────── d1 203.0.113.10/24 (+.11 +.12)
 *                       (lan0 = "the node NIC")                                          default via 203.0.113.1
 *
 * The LAN has no route to the client network, as a real LAN knows nothing of pod addresses: client
 * traffic reaches the gateway or the destination only once the router translates its source.
 * Forwarding is off in the router namespace — turning it on is the daemon's job.
 *
 * iproute2 is fine here: this is lab and test code, not the daemon. Every namespace name carries
 * prefix + pid + counter, so parallel runs never collide and sweepStale() can tell which are orphans.
 */
import { execFileSync, spawn as spawnChild, type ChildProcess, type StdioOptions } from 'node:child_process'
import { mkdirSync, readdirSync, rmSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { EgressError } from '../errors.js'
import { CommandError, run, runOk, killGroup, stopChild, type ExecOptions, type ExecResult } from './exec.js'
import { waitFor } from './wait.js'

export type NsRole = 'client' | 'router' | 'lan' | 'dest'
export const NS_ROLES: readonly NsRole[] = ['client', 'router', 'lan', 'dest']

/** Every name and address of the topology. Fixed, so tests and the lab can state them as constants. */
export const LAB = {
  links: {
    /** client ns, towards the router */
    client: 'c0',
    /** router ns, where clients come in (EGRESS_POD_INTERFACE) */
    routerPod: 'eth0',
    /** router ns, "the node NIC": parent of the macvlan (EGRESS_INTERFACE) */
    routerLan: 'lan0',
    /** lan ns, towards the router */
    lanToRouter: 'r0',
    /** lan ns, towards the destination */
    lanToDest: 'd0',
    /** dest ns */
    dest: 'd1'
  },
  v4: {
    prefixLength: 24,
    clientNet: '198.51.100.0/24',
    client: '198.51.100.2',
    /** the router's pod-side address: the clients' default gateway */
    routerPod: '198.51.100.1',
    lanNet: '192.0.2.0/24',
    /** EGRESS_GATEWAY; also "a LAN host" */
    gateway: '192.0.2.1',
    /** lan0's own address (the node's address on its NIC) */
    routerLan: '192.0.2.2',
    /** EGRESS_SOURCE: free on the LAN, for the daemon's macvlan */
    source: '192.0.2.99',
    destNet: '203.0.113.0/24',
    destGateway: '203.0.113.1',
    dest: '203.0.113.10',
    destExtra: ['203.0.113.11', '203.0.113.12']
  },
  v6: {
    prefixLength: 64,
    clientNet: '2001:db8:c::/64',
    client: '2001:db8:c::2',
    routerPod: '2001:db8:c::1',
    lanNet: '2001:db8:1::/64',
    gateway: '2001:db8:1::1',
    routerLan: '2001:db8:1::2',
    source: '2001:db8:1::99',
    destNet: '2001:db8:d::/64',
    destGateway: '2001:db8:d::1',
    dest: '2001:db8:d::10',
    destExtra: ['2001:db8:d::11', '2001:db8:d::12']
  }
} as const

export const MACVLAN_MODES = ['bridge', 'private', 'vepa', 'passthru', 'source'] as const
export type MacvlanMode = typeof MACVLAN_MODES[number]

export interface TopologyOptions {
  /** Start of every namespace name; default 'erlab-'. Letters, digits, '.', '_', '-'. */
  prefix?: string
  /** Add the IPv6 addresses and routes too (DAD off, so they are usable at once). */
  ipv6?: boolean
  /** As a CNI plugin would: a macvlan on lan0 in the router ns, down, without an address. */
  precreateMacvlan?: { name: string, mode?: MacvlanMode }
  /** Written to /etc/netns/<router ns>/resolv.conf, which `ip netns exec` mounts over /etc/resolv.conf. */
  dnsResolvConf?: string
  /** Deadline for each command while building; default 10 s. */
  commandTimeoutMs?: number
}

export interface SpawnInNsOptions {
  env?: NodeJS.ProcessEnv
  cwd?: string
  /** Default ['ignore', 'pipe', 'pipe']. */
  stdio?: StdioOptions
}

export interface Topology {
  /** prefix + pid + counter: the common start of this topology's namespace names. */
  readonly id: string
  readonly ns: Readonly<Record<NsRole, string>>
  readonly addrs: typeof LAB
  readonly ipv6: boolean
  readonly macvlan: { readonly name: string, readonly mode: MacvlanMode } | undefined
  /** /etc/netns/<router ns> when dnsResolvConf was given. */
  readonly netnsEtcDir: string | undefined
  /** Runs argv in the namespace; resolves whatever the exit status. */
  exec: (role: NsRole, argv: readonly string[], opts?: Omit<ExecOptions, 'netns'>) => Promise<ExecResult>
  /** exec(), but a failure rejects with CommandError. */
  execOk: (role: NsRole, argv: readonly string[], opts?: Omit<ExecOptions, 'netns'>) => Promise<ExecResult>
  /** Starts a long-running process in the namespace; destroy() stops it. */
  spawn: (role: NsRole, argv: readonly string[], opts?: SpawnInNsOptions) => ChildProcess
  /** Stops every process in the namespaces, deletes them (and so their links) and /etc/netns files. Idempotent. */
  destroy: () => Promise<void>
  /**
   * `lab --keep`: leave the topology (and the processes in it) in place when this process exits or
   * is signalled. destroy() still works; sweepStale() treats it as stale once this process is gone.
   */
  keep: () => void
}

const DEFAULT_PREFIX = 'erlab-'
const NETNS_ETC = '/etc/netns'
let counter = 0

/** One step of building: what it does (for the error) and the command. */
export interface BuildStep { what: string, argv: string[] }

/**
 * The sysctl and iproute2 commands that wire a set of existing namespaces, in order. Pure, so the
 * wiring can be read (and tested) as data. Consecutive `ip -n NS …` steps for one namespace run as
 * one `ip -batch`, so the order also keeps each namespace's steps together.
 */
export function wiringSteps (ns: Readonly<Record<NsRole, string>>, opts: Pick<TopologyOptions, 'ipv6' | 'precreateMacvlan'>): BuildStep[] {
  const L = LAB.links
  const v4 = LAB.v4
  const v6 = LAB.v6
  const six = opts.ipv6 === true
  const steps: BuildStep[] = []
  const ip = (role: NsRole, what: string, ...args: string[]): void => {
    steps.push({ what: `${role}: ${what}`, argv: ['ip', '-n', ns[role], ...args] })
  }
  /** Equivalent to: ip addr add $a4/24 dev $dev; ip addr add $a6/64 dev $dev nodad */
  const addr = (role: NsRole, dev: string, a4: string, a6: string): void => {
    ip(role, `${a4}/${v4.prefixLength} on ${dev}`, 'addr', 'add', `${a4}/${v4.prefixLength}`, 'dev', dev)
    // No `-6`: global options cannot appear on an `ip -batch` line; the address tells the family.
    if (six) ip(role, `${a6}/${v6.prefixLength} on ${dev}`, 'addr', 'add', `${a6}/${v6.prefixLength}`, 'dev', dev, 'nodad')
  }
  const up = (role: NsRole, dev: string): void => { ip(role, `${dev} up`, 'link', 'set', dev, 'up') }
  /** Equivalent to: ip route add default via $gw dev $dev (and the same for IPv6) */
  const defaultRoute = (role: NsRole, gw4: string, gw6: string, dev: string): void => {
    ip(role, `default via ${gw4}`, 'route', 'add', 'default', 'via', gw4, 'dev', dev)
    if (six) ip(role, `default via ${gw6}`, 'route', 'add', '::/0', 'via', gw6, 'dev', dev)
  }

  // Sysctls first: "no DAD" must be the default before any link exists, so every link (the daemon's
  // macvlan too) inherits it. Forwarding: the LAN routes; the router must be turned on by the daemon.
  const dad = six ? ['net.ipv6.conf.all.accept_dad=0', 'net.ipv6.conf.default.accept_dad=0'] : []
  const forwarding = (on: boolean): string[] =>
    [`net.ipv4.ip_forward=${on ? 1 : 0}`, ...(six ? [`net.ipv6.conf.all.forwarding=${on ? 1 : 0}`] : [])]
  const sysctls: Record<NsRole, string[]> = { client: dad, router: [...dad, ...forwarding(false)], lan: [...dad, ...forwarding(true)], dest: dad }
  for (const role of NS_ROLES) {
    if (sysctls[role].length === 0) continue
    steps.push({ what: `${role}: sysctl ${sysctls[role].join(' ')}`, argv: ['ip', 'netns', 'exec', ns[role], 'sysctl', '-q', '-w', ...sysctls[role]] })
  }

  // Each veth is created inside a namespace with its peer placed straight into the next one, so no
  // interface name ever exists on the host side.
  ip('client', `veth ${L.client} <-> router ${L.routerPod}`, 'link', 'add', L.client, 'type', 'veth', 'peer', 'name', L.routerPod, 'netns', ns.router)
  ip('client', 'loopback up', 'link', 'set', 'lo', 'up')
  addr('client', L.client, v4.client, v6.client)
  up('client', L.client)

  ip('router', 'loopback up', 'link', 'set', 'lo', 'up')
  addr('router', L.routerPod, v4.routerPod, v6.routerPod)
  up('router', L.routerPod)
  ip('router', `veth ${L.routerLan} <-> lan ${L.lanToRouter}`, 'link', 'add', L.routerLan, 'type', 'veth', 'peer', 'name', L.lanToRouter, 'netns', ns.lan)
  addr('router', L.routerLan, v4.routerLan, v6.routerLan)
  up('router', L.routerLan)
  if (opts.precreateMacvlan !== undefined) {
    const { name, mode = 'bridge' } = opts.precreateMacvlan
    // As a CNI plugin leaves it: down, no address — the daemon adopts it.
    ip('router', `pre-created macvlan ${name} (${mode}) on ${L.routerLan}`,
      'link', 'add', name, 'link', L.routerLan, 'type', 'macvlan', 'mode', mode)
  }

  ip('lan', 'loopback up', 'link', 'set', 'lo', 'up')
  addr('lan', L.lanToRouter, v4.gateway, v6.gateway)
  up('lan', L.lanToRouter)
  ip('lan', `veth ${L.lanToDest} <-> dest ${L.dest}`, 'link', 'add', L.lanToDest, 'type', 'veth', 'peer', 'name', L.dest, 'netns', ns.dest)
  addr('lan', L.lanToDest, v4.destGateway, v6.destGateway)
  up('lan', L.lanToDest)

  ip('dest', 'loopback up', 'link', 'set', 'lo', 'up')
  addr('dest', L.dest, v4.dest, v6.dest)
  v4.destExtra.forEach((a, i) => addr('dest', L.dest, a, v6.destExtra[i] as string))
  up('dest', L.dest)
  // Routes last, once every link on the way is up. The LAN gets none back to the client network.
  defaultRoute('dest', v4.destGateway, v6.destGateway, L.dest)
  defaultRoute('client', v4.routerPod, v6.routerPod, L.client)
  defaultRoute('router', v4.gateway, v6.gateway, L.routerLan)
  return steps
}

/**
 * Runs the steps in order; consecutive `ip -n NS …` steps go to one `ip -n NS -batch -` (which
 * stops at its first failing line). `progress.step` names the step that is running — or failed.
 */
async function runSteps (steps: readonly BuildStep[], timeoutMs: number, progress: { step: string }): Promise<void> {
  const nsOf = (s: BuildStep): string | undefined => s.argv[0] === 'ip' && s.argv[1] === '-n' ? s.argv[2] : undefined
  for (let i = 0; i < steps.length;) {
    const first = steps[i] as BuildStep
    const ns = nsOf(first)
    let j = i + 1
    while (ns !== undefined && j < steps.length && nsOf(steps[j] as BuildStep) === ns) j++
    const group = steps.slice(i, j)
    progress.step = first.what
    if (ns === undefined || group.length === 1) {
      await runOk(first.argv, { timeoutMs })
    } else {
      const input = group.map((s) => s.argv.slice(3).join(' ')).join('\n') + '\n'
      const r = await run(['ip', '-n', ns, '-batch', '-'], { input, timeoutMs })
      if (r.code !== 0 || r.timedOut) {
        // iproute2 says "Command failed -:LINE"; name that step.
        const line = /-:(\d+)/.exec(r.stderr)
        progress.step = (group[line === null ? 0 : Number(line[1]) - 1] ?? first).what
        throw new CommandError(r.argv, r)
      }
    }
    i = j
  }
}

/** Problems with the options, as messages; empty when they are fine. */
export function checkTopologyOptions (opts: TopologyOptions): string[] {
  const problems: string[] = []
  const prefix = opts.prefix ?? DEFAULT_PREFIX
  if (!/^[A-Za-z0-9._-]{1,64}$/.test(prefix)) {
    problems.push(`prefix '${prefix}': 1-64 characters of letters, digits, '.', '_' and '-'`)
  }
  const mv = opts.precreateMacvlan
  if (mv !== undefined) {
    if (!/^[A-Za-z0-9._-]{1,15}$/.test(mv.name) || mv.name === '.' || mv.name === '..') {
      problems.push(`precreateMacvlan.name '${mv.name}': an interface name of 1-15 letters, digits, '.', '_' or '-'`)
    } else if (Object.values(LAB.links).includes(mv.name as never) || mv.name === 'lo') {
      problems.push(`precreateMacvlan.name '${mv.name}': already used by the topology`)
    }
    if (mv.mode !== undefined && !MACVLAN_MODES.includes(mv.mode)) {
      problems.push(`precreateMacvlan.mode '${String(mv.mode)}': one of ${MACVLAN_MODES.join(', ')}`)
    }
  }
  return problems
}

// ---------------------------------------------------------------------------------------------
// Teardown whatever happens: every live topology is in this set until destroyed. The exit handler
// must be synchronous, and a signal handler tears down synchronously too, because the process may
// be gone before any promise settles.

const live = new Set<LabTopology>()
// Not SIGHUP: the daemon uses it to re-read its configuration.
const SIGNALS: readonly NodeJS.Signals[] = ['SIGINT', 'SIGTERM']
let handlersInstalled = false

function onExit (): void {
  for (const topo of [...live]) topo.destroySync()
}

function onSignal (signal: NodeJS.Signals): void {
  for (const topo of [...live]) topo.destroySync()
  uninstallHandlers()
  // Our listener kept the default action from happening; with it gone, send the signal again so the
  // process's other handlers (tap's, the lab command's) or the default action decide what happens.
  process.kill(process.pid, signal)
}

function installHandlers (): void {
  if (handlersInstalled) return
  handlersInstalled = true
  process.on('exit', onExit)
  for (const s of SIGNALS) process.on(s, onSignal)
}

function uninstallHandlers (): void {
  if (!handlersInstalled) return
  handlersInstalled = false
  process.off('exit', onExit)
  for (const s of SIGNALS) process.off(s, onSignal)
}

/** Names of the live topologies' namespaces in this process (for diagnostics and tests). */
export function liveNamespaces (): string[] {
  return [...live].flatMap((t) => NS_ROLES.map((r) => t.ns[r]))
}

const ETC_NETNS_NAME = /^[A-Za-z0-9._-]+$/

class LabTopology implements Topology {
  readonly id: string
  readonly ns: Readonly<Record<NsRole, string>>
  readonly addrs = LAB
  readonly ipv6: boolean
  readonly macvlan: { readonly name: string, readonly mode: MacvlanMode } | undefined
  netnsEtcDir: string | undefined
  /** Namespaces that exist (added as each is created, so a failed build deletes exactly those). */
  readonly created: string[] = []
  readonly children = new Set<ChildProcess>()
  private destroying: Promise<void> | undefined
  private gone = false

  constructor (id: string, opts: TopologyOptions) {
    this.id = id
    this.ns = Object.freeze({
      client: `${id}-client`,
      router: `${id}-router`,
      lan: `${id}-lan`,
      dest: `${id}-dest`
    })
    this.ipv6 = opts.ipv6 === true
    this.macvlan = opts.precreateMacvlan === undefined
      ? undefined
      : { name: opts.precreateMacvlan.name, mode: opts.precreateMacvlan.mode ?? 'bridge' }
    // Bound: they get passed around as callbacks (`t.teardown(topo.destroy)` calls it with this = t).
    this.exec = this.exec.bind(this)
    this.execOk = this.execOk.bind(this)
    this.spawn = this.spawn.bind(this)
    this.keep = this.keep.bind(this)
    this.destroy = this.destroy.bind(this)
  }

  private nameOf (role: NsRole): string {
    const name = this.ns[role]
    if (name === undefined) throw new TypeError(`unknown namespace role '${String(role)}'`)
    if (this.gone || this.destroying !== undefined) {
      throw new EgressError('ERR_LAB_DESTROYED', `topology ${this.id} is destroyed; cannot use its ${role} namespace`)
    }
    return name
  }

  async exec (role: NsRole, argv: readonly string[], opts: Omit<ExecOptions, 'netns'> = {}): Promise<ExecResult> {
    return await run(argv, { ...opts, netns: this.nameOf(role) })
  }

  async execOk (role: NsRole, argv: readonly string[], opts: Omit<ExecOptions, 'netns'> = {}): Promise<ExecResult> {
    return await runOk(argv, { ...opts, netns: this.nameOf(role) })
  }

  spawn (role: NsRole, argv: readonly string[], opts: SpawnInNsOptions = {}): ChildProcess {
    const name = this.nameOf(role)
    if (argv.length === 0) throw new TypeError('spawn: empty command')
    // Own process group, so stopping it also stops whatever it forked.
    const child = spawnChild('ip', ['netns', 'exec', name, ...argv], {
      stdio: opts.stdio ?? ['ignore', 'pipe', 'pipe'],
      env: opts.env,
      cwd: opts.cwd,
      detached: true
    })
    this.children.add(child)
    child.once('exit', () => this.children.delete(child))
    child.once('error', () => this.children.delete(child))
    return child
  }

  keep (): void {
    live.delete(this)
    if (live.size === 0) uninstallHandlers()
  }

  async destroy (): Promise<void> {
    this.destroying ??= this.teardown()
    await this.destroying
  }

  private async teardown (): Promise<void> {
    const problems: unknown[] = []
    await Promise.all([...this.children].map(async (c) => await stopChild(c)))
    // Processes nobody tracked (a daemon started by other code, their children) would keep a
    // deleted namespace — and its links — alive. Nothing in a lab namespace outlives the lab.
    for (const name of [...this.created].reverse()) {
      try {
        await killNamespacePids(name)
        await waitFor(async () => (await namespacePids(name)).length === 0,
          { what: `the processes in ${name} to exit`, timeoutMs: 5_000 })
      } catch (err) { problems.push(err) }
      try { await deleteNamespace(name) } catch (err) { problems.push(err) }
    }
    try { this.removeEtcDir() } catch (err) { problems.push(err) }
    this.gone = true
    live.delete(this)
    if (live.size === 0) uninstallHandlers()
    if (problems.length > 0) {
      throw new EgressError('ERR_LAB_DESTROY', `tearing down ${this.id}: ${problems.map(msg).join('; ')}`,
        { cause: new AggregateError(problems) })
    }
  }

  /** For the exit and signal handlers: the same teardown, synchronous, best effort. */
  destroySync (): void {
    if (this.gone) return
    this.gone = true
    for (const c of this.children) killGroup(c, 'SIGKILL')
    for (const name of [...this.created].reverse()) {
      try {
        const out = execFileSync('ip', ['netns', 'pids', name], { timeout: 5_000, stdio: ['ignore', 'pipe', 'ignore'] })
        for (const pid of parsePids(out.toString())) killPid(pid)
      } catch { /* the namespace is gone already */ }
      try {
        execFileSync('ip', ['netns', 'del', name], { timeout: 5_000, stdio: 'ignore' })
      } catch { /* already gone */ }
    }
    try { this.removeEtcDir() } catch { /* nothing more to do at exit */ }
    live.delete(this)
    if (live.size === 0) uninstallHandlers()
  }

  writeResolvConf (text: string): void {
    const dir = join(NETNS_ETC, this.ns.router)
    if (!ETC_NETNS_NAME.test(this.ns.router)) throw new TypeError(`unsafe namespace name ${this.ns.router}`)
    mkdirSync(dir, { recursive: true })
    this.netnsEtcDir = dir
    writeFileSync(join(dir, 'resolv.conf'), text)
  }

  private removeEtcDir (): void {
    if (this.netnsEtcDir !== undefined) rmSync(this.netnsEtcDir, { recursive: true, force: true })
  }
}

function msg (err: unknown): string {
  return err instanceof Error ? err.message : String(err)
}

function parsePids (text: string): number[] {
  return text.split(/\s+/).filter((s) => /^\d+$/.test(s)).map(Number).filter((p) => p > 1 && p !== process.pid)
}

function killPid (pid: number): void {
  try { process.kill(pid, 'SIGKILL') } catch { /* already gone */ }
}

/** Equivalent to: ip netns pids $name (empty when the namespace does not exist). */
async function namespacePids (name: string): Promise<number[]> {
  const r = await run(['ip', 'netns', 'pids', name], { timeoutMs: 5_000 })
  return r.code === 0 ? parsePids(r.stdout) : []
}

async function killNamespacePids (name: string): Promise<void> {
  for (const pid of await namespacePids(name)) killPid(pid)
}

/** Equivalent to: ip netns del $name — "already gone" is success. */
async function deleteNamespace (name: string): Promise<void> {
  const r = await run(['ip', 'netns', 'del', name], { timeoutMs: 10_000 })
  if (r.code === 0) return
  if (/No such file|not found|does not exist/i.test(r.stderr)) return
  throw new EgressError('ERR_LAB_DESTROY', `ip netns del ${name}: ${r.stderr.trim() || `exit ${String(r.code)}`}`)
}

/** Every network namespace name on the host (`ip netns list`). */
export async function listNamespaces (): Promise<string[]> {
  const r = await runOk(['ip', 'netns', 'list'], { timeoutMs: 5_000 })
  // Lines look like "name (id: 3)" or just "name".
  return r.stdout.split('\n').map((l) => l.trim().split(/\s+/)[0] ?? '').filter((n) => n !== '')
}

/**
 * Waits until every link of the topology is operationally up — until then the kernel has not
 * activated its queue and drops what is sent — and, with IPv6, no address is still tentative.
 */
async function waitReady (topo: LabTopology, timeoutMs: number): Promise<void> {
  const expected: Record<NsRole, string[]> = {
    client: [LAB.links.client],
    router: [LAB.links.routerPod, LAB.links.routerLan],
    lan: [LAB.links.lanToRouter, LAB.links.lanToDest],
    dest: [LAB.links.dest]
  }
  interface Link { ifname: string, operstate?: string, addr_info?: Array<{ family?: string, tentative?: boolean }> }
  await Promise.all(NS_ROLES.map(async (role) => {
    await waitFor(async () => {
      const r = await runOk(['ip', '-j', '-n', topo.ns[role], 'addr', 'show'], { timeoutMs: 5_000 })
      const links = JSON.parse(r.stdout) as Link[]
      return expected[role].every((dev) => {
        const l = links.find((x) => x.ifname === dev)
        const tentative = (l?.addr_info ?? []).some((a) => a.tentative === true && (topo.ipv6 || a.family !== 'inet6'))
        return l !== undefined && l.operstate === 'UP' && !tentative
      })
    }, { what: `links of ${topo.ns[role]} to be up with usable addresses`, timeoutMs })
  }))
}

/**
 * Builds the topology. On any failure it deletes what it had built and rejects with
 * ERR_LAB_BUILD naming the step; the cause is the failed command.
 */
export async function buildTopology (opts: TopologyOptions = {}): Promise<Topology> {
  const problems = checkTopologyOptions(opts)
  if (problems.length > 0) throw new EgressError('ERR_LAB_OPTIONS', `buildTopology: ${problems.join('; ')}`)
  const prefix = opts.prefix ?? DEFAULT_PREFIX
  const timeoutMs = opts.commandTimeoutMs ?? 10_000
  const topo = new LabTopology(`${prefix}${process.pid}-${++counter}`, opts)
  live.add(topo)
  installHandlers()
  let step = 'start'
  try {
    for (const role of NS_ROLES) {
      step = `create namespace ${topo.ns[role]}`
      await runOk(['ip', 'netns', 'add', topo.ns[role]], { timeoutMs })
      topo.created.push(topo.ns[role])
    }
    const progress = { step }
    try {
      await runSteps(wiringSteps(topo.ns, opts), timeoutMs, progress)
    } finally {
      step = progress.step
    }
    if (opts.dnsResolvConf !== undefined) {
      step = 'write resolv.conf for the router namespace'
      topo.writeResolvConf(opts.dnsResolvConf)
    }
    step = 'wait for links to come up'
    await waitReady(topo, timeoutMs)
  } catch (err) {
    let rollback = ''
    try { await topo.destroy() } catch (e) { rollback = `; teardown also failed: ${msg(e)}` }
    throw new EgressError('ERR_LAB_BUILD', `building topology ${topo.id} failed at "${step}": ${msg(err)}${rollback}`, { cause: err })
  }
  return topo
}

/** Ends the processes in one namespace, deletes it and its /etc/netns directory (for what a process left behind). */
export async function removeNamespace (name: string): Promise<void> {
  await killNamespacePids(name)
  await deleteNamespace(name)
  if (ETC_NETNS_NAME.test(name)) rmSync(join(NETNS_ETC, name), { recursive: true, force: true })
}

/**
 * Deletes namespaces (and their /etc/netns directories) left by processes that died without
 * tearing down: names `${prefix}<pid>-<n>-<role>` whose pid is not running. Returns what it deleted.
 */
export async function sweepStale (prefix: string = DEFAULT_PREFIX): Promise<string[]> {
  const pattern = new RegExp(`^${prefix.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')}(\\d+)-\\d+-(client|router|lan|dest)$`)
  const swept: string[] = []
  for (const name of await listNamespaces()) {
    const m = pattern.exec(name)
    if (m === null) continue
    const pid = Number(m[1])
    if (pid === process.pid || isRunning(pid)) continue
    await removeNamespace(name)
    swept.push(name)
  }
  // A process that died between deleting its namespace and its /etc/netns directory leaves the latter.
  let dirs: string[] = []
  try { dirs = readdirSync(NETNS_ETC) } catch { /* no /etc/netns at all */ }
  for (const dir of dirs) {
    const m = pattern.exec(dir)
    if (m === null || Number(m[1]) === process.pid || isRunning(Number(m[1]))) continue
    rmSync(join(NETNS_ETC, dir), { recursive: true, force: true })
  }
  return swept
}

function isRunning (pid: number): boolean {
  try {
    process.kill(pid, 0)
    return true
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'EPERM'
  }
}
