/**
 * What the redirect-mode end-to-end tests share: a topology per test (torn down in t.teardown), the real
 * daemon started in its router namespace (stopped in t.teardown), the router's environment, and full dumps of
 * the router namespace's network state to compare before / during / after.
 *
 *   const topo = await topology(t)
 *   const router = await daemon(t, topo, redirectEnv({ EGRESS_DESTINATION: '80 tcp 203.0.113.10' }))
 *   const state = await dumpState(topo)
 */
import { existsSync } from 'node:fs'
import type { Test } from 'tap'
import { ROUTER_BIN, startRouter, type LogLine, type RouterProcess } from '../../src/lab/router-process.js'
import { buildTopology, LAB, type NsRole, type Topology, type TopologyOptions } from '../../src/lab/topology.js'
import { waitFor } from '../../src/lab/wait.js'

/** Network-namespace prefix of these tests (parallel test files must not collide). */
export const PREFIX = 'ere2e-'

/** The daemon runs compiled code: name the missing build instead of failing obscurely. */
export function distMissing (): string | null {
  const cli = new URL('../../dist/bundle/cli.js', import.meta.url)
  return existsSync(cli) ? null : `dist/ is missing: run \`npm run build\` before these tests (${ROUTER_BIN} needs it)`
}

export async function topology (t: Test, opts: Omit<TopologyOptions, 'prefix'> = {}): Promise<Topology> {
  const topo = await buildTopology({ ...opts, prefix: PREFIX })
  t.teardown(topo.destroy)
  return topo
}

/** The router's environment for redirect mode on the topology, as an operator would write the pod spec. */
export function redirectEnv (extra: Record<string, string>, opts: { ipv6?: boolean } = {}): Record<string, string> {
  const a = opts.ipv6 === true ? LAB.v6 : LAB.v4
  return {
    EGRESS_ROUTER_MODE: 'redirect',
    EGRESS_SOURCE: `${a.source}/${a.prefixLength}`,
    EGRESS_GATEWAY: a.gateway,
    EGRESS_INTERFACE: LAB.links.routerLan,
    EGRESS_POD_INTERFACE: LAB.links.routerPod,
    EGRESS_HEALTH_ADDRESS: ':9090',
    EGRESS_DRAIN_TIMEOUT: '1s',
    ...extra
  }
}

/** Starts the daemon (stopped with SIGTERM in t.teardown, SIGKILL if it hangs) and waits until it is ready. */
export async function daemon (t: Test, topo: Topology, env: Record<string, string>, opts: { ready?: boolean, args?: string[] } = {}): Promise<RouterProcess> {
  const router = startRouter(topo, env, { args: opts.args })
  t.teardown(async () => { await router.stop('SIGTERM', 10_000) })
  if (opts.ready !== false) await router.waitReady(20_000)
  return router
}

export interface Exit { code: number | null, signal: NodeJS.Signals | null, stdout: LogLine[], stderr: string }

/** Runs a daemon command that is expected to end on its own (init mode, invalid configuration, cleanup). */
export async function runToExit (t: Test, topo: Topology, env: Record<string, string>, args: string[] = ['run'], timeoutMs = 20_000, wrap?: readonly string[]): Promise<Exit> {
  const router = startRouter(topo, env, { args, wrap })
  t.teardown(async () => { await router.stop('SIGKILL', 5_000) })
  let exit: { code: number | null, signal: NodeJS.Signals | null } | null = null
  void router.exited.then((e) => { exit = e })
  const ended = await waitFor(() => exit, { what: `egress-router ${args.join(' ')} to exit`, timeoutMs, intervalMs: 20 })
  return { ...ended, stdout: router.logs, stderr: router.stderr() }
}

/** The JSON log line of an event, for messages. */
export function logOf (router: RouterProcess, event: string): LogLine | undefined {
  return router.logs.find((l) => l.event === event)
}

// ---------------------------------------------------------------------------------------------
// State dumps

/**
 * Everything of the router namespace a daemon may change, each as the text iproute2 / nft print. Link and
 * address dumps keep their ifindexes: a restart that re-created the link would show. Normalised only for what
 * changes with no one changing anything: packet counters, and an IPv6 address' DAD state (it is "tentative"
 * for a second after a link comes up; the dump waits for DAD to finish rather than hiding the flag).
 */
export const DUMP_COMMANDS: Readonly<Record<string, readonly string[]>> = {
  'ip -d link': ['ip', '-d', 'link', 'show'],
  'ip -4 addr': ['ip', '-4', 'addr', 'show'],
  'ip -6 addr': ['ip', '-6', 'addr', 'show'],
  'ip -4 route show table all': ['ip', '-4', 'route', 'show', 'table', 'all'],
  'ip -6 route show table all': ['ip', '-6', 'route', 'show', 'table', 'all'],
  'ip -4 rule': ['ip', '-4', 'rule', 'show'],
  'ip -6 rule': ['ip', '-6', 'rule', 'show'],
  'nft list ruleset': ['nft', 'list', 'ruleset'],
  sysctl: ['sh', '-c', 'sysctl -a 2>/dev/null | grep -E "^net\\.ipv(4\\.conf|6\\.conf)\\.[^ ]+\\.(forwarding|arp_notify|ndisc_notify|accept_ra|rp_filter) |^net\\.ipv4\\.ip_forward "']
}

export type StateDump = Record<string, string>

export function normaliseDump (name: string, text: string): string {
  if (name === 'nft list ruleset') return text.replace(/counter packets \d+ bytes \d+/g, 'counter packets N bytes N')
  return text
}

export async function dumpState (topo: Topology, role: NsRole = 'router', opts: { only?: readonly string[] } = {}): Promise<StateDump> {
  // An IPv6 link-local address stays tentative until DAD is done; wait for that instead of masking it.
  await waitFor(async () => !(await topo.execOk(role, ['ip', '-6', 'addr', 'show'])).stdout.includes('tentative'),
    { what: `IPv6 DAD to finish in ${topo.ns[role]}`, timeoutMs: 10_000, intervalMs: 100 })
  const out: StateDump = {}
  for (const [name, argv] of Object.entries(DUMP_COMMANDS)) {
    if (opts.only !== undefined && !opts.only.includes(name)) continue
    const r = await topo.execOk(role, argv)
    out[name] = normaliseDump(name, r.stdout)
  }
  return out
}

/** Equivalent to: ip -j -n NS link show NAME — null when there is no such link. */
export async function linkInfo (topo: Topology, name: string, role: NsRole = 'router'): Promise<{ ifname: string, ifindex: number, address: string, ifalias?: string, operstate: string } | null> {
  const r = await topo.exec(role, ['ip', '-j', 'link', 'show', 'dev', name])
  if (r.code !== 0) return null
  const links = JSON.parse(r.stdout) as Array<{ ifname: string, ifindex: number, address: string, ifalias?: string, operstate: string }>
  return links[0] ?? null
}

/** What our daemon may leave in the router namespace: empty when nothing of it remains. */
export async function leftovers (topo: Topology, opts: { linkName?: string, ownLink?: boolean } = {}): Promise<string[]> {
  const found: string[] = []
  const linkName = opts.linkName ?? 'macvlan0'
  if (opts.ownLink !== false && await linkInfo(topo, linkName) !== null) found.push(`link ${linkName}`)
  for (const fam of ['-4', '-6']) {
    const rules = (await topo.execOk('router', ['ip', fam, 'rule', 'show'])).stdout
    for (const line of rules.split('\n')) if (/^(6572|6573):/.test(line)) found.push(`ip ${fam} rule ${line.trim()}`)
    const routes = await topo.exec('router', ['ip', fam, 'route', 'show', 'table', '6572'])
    if (routes.stdout.trim() !== '') found.push(`ip ${fam} routes in table 6572: ${routes.stdout.trim()}`)
  }
  const nft = (await topo.execOk('router', ['nft', 'list', 'tables'])).stdout
  if (nft.includes('egress_router')) found.push(`nft: ${nft.trim()}`)
  return found
}
