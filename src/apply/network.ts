/**
 * Makes the network part of a Plan true in the kernel (applyNetwork), tells what drifted from it
 * (diffNetwork), puts back only that (repairNetwork), and removes what this daemon may have left
 * behind (cleanupNetwork). Thin: every decision is in the plan; every kernel call in the Rtnl.
 *
 * Ownership marker: a macvlan this daemon creates gets IFLA_IFALIAS = OWNER_ALIAS (`ip link set X
 * alias …`). cleanup deletes a link only when it carries that alias, so a link a CNI plugin made
 * (adopted) is never deleted, across restarts and crashes. Rules are ours when they sit at one of our
 * priorities AND look up one of our tables; routes are ours when they are in one of our numeric
 * tables. The main table is never flushed.
 */
import type { Family } from '../config/types.js'
import { NetlinkError } from '../errors.js'
import { announce, scheduleAnnounce, type AnnounceOutcome } from '../netlink/announce.js'
import { canonicalIp } from '../netlink/ip.js'
import { readSysctl, writeSysctl } from '../netlink/sysctl.js'
import { RT_TABLE_LOCAL, RT_TABLE_MAIN, type LinkState, type Prefix, type RouteSpec, type RouteState, type RuleSpec, type Rtnl } from '../netlink/types.js'
import type { AddressPlan, NetworkPlan, RoutePlan, RulePlan, SysctlPlan, Table } from '../plan/types.js'
import { UndoStack } from './undo.js'

/** IFLA_IFALIAS put on links this daemon creates; cleanup deletes only links that carry it. */
export const OWNER_ALIAS = 'egress-router: created, safe to delete when it is not running'

/** When the second announcement goes out, like the old router's second arping. */
export const REANNOUNCE_MS = 2000

export interface ApplyNetworkOptions {
  /** delay of the second announcement; null = none. Default REANNOUNCE_MS. */
  readonly reannounceMs?: number | null
}

export interface ApplyNetworkResult {
  readonly linkIndex: number
  /** true when this run created the link (false: adopted, or found from an earlier run) */
  readonly created: boolean
  /**
   * The second announcement, on an unref()ed timer: a process that exits right after apply (init
   * mode) should await it first. Never rejects; cancelled by unwinding.
   */
  readonly reannounced: Promise<AnnounceOutcome> | null
}

export function tableNumber (table: Table): number {
  return table === 'main' ? RT_TABLE_MAIN : table
}

function prefixOf (c: { address: string, prefix: number } | null): Prefix | null {
  return c === null ? null : { address: canonicalIp(c.address), prefix: c.prefix }
}

function samePrefix (a: Prefix | null, b: Prefix | null): boolean {
  return a === null || b === null ? a === b : a.prefix === b.prefix && canonicalIp(a.address) === canonicalIp(b.address)
}

function sameIp (a: string | null, b: string | null): boolean {
  return a === null || b === null ? a === b : canonicalIp(a) === canonicalIp(b)
}

/** Sysctls of the macvlan itself (arp_notify, ndisc_notify, accept_ra): set before the link goes up. */
function isLinkSysctl (s: SysctlPlan, link: string): boolean {
  return s.path.includes(`/conf/${link}/`)
}

/**
 * The metric a route we install without RTA_PRIORITY gets: IPv4 0, IPv6 1024 (IP6_RT_PRIO_USER).
 * A route with the same table, dst and metric is the one `replace` overwrites.
 */
function defaultMetric (family: Family): number {
  return family === 4 ? 0 : 1024
}

/** The kernel route our plan would replace (same table, destination, metric), if any. */
function findRouteSlot (routes: readonly RouteState[], plan: RoutePlan): RouteState | undefined {
  const table = tableNumber(plan.table)
  const dst = prefixOf(plan.dst)
  return routes.find(r => r.table === table && samePrefix(r.dst, dst) && r.metric === defaultMetric(plan.family) && r.type === 'UNICAST')
}

function routeMatches (r: RouteState, spec: RouteSpec): boolean {
  return r.oif === spec.oif && sameIp(r.via, spec.via) && sameIp(r.src, spec.src)
}

function ruleSpec (r: RulePlan): RuleSpec {
  return { family: r.family, priority: r.priority, from: prefixOf(r.from), fwmark: r.fwmark, table: r.table }
}

function ruleMatches (a: RuleSpec & { action?: string }, b: RuleSpec): boolean {
  return a.priority === b.priority && samePrefix(a.from, b.from) && a.fwmark === b.fwmark && a.table === b.table &&
    (a.action === undefined || a.action === 'toTbl')
}

function describeRoute (r: RoutePlan): string {
  const dst = r.dst === null ? 'default' : `${r.dst.address}/${r.dst.prefix}`
  return `route ${dst}${r.via !== null ? ` via ${r.via.address}` : ''} dev ${r.dev}${r.src !== null ? ` src ${r.src.address}` : ''} table ${r.table}`
}

function describeRule (r: RulePlan): string {
  const sel = `${r.from !== null ? ` from ${r.from.address}/${r.from.prefix}` : ''}${r.fwmark !== null ? ` fwmark 0x${r.fwmark.toString(16)}` : ''}`
  return `rule priority ${r.priority}${sel === '' ? ' all' : sel} lookup ${r.table}`
}

function describeAddress (a: AddressPlan): string {
  return `address ${a.cidr.address}/${a.cidr.prefix} on ${a.link}`
}

async function requireLink (nl: Rtnl, name: string, what: string): Promise<LinkState> {
  const link = await nl.linkByName(name)
  if (link === null) throw new NetlinkError(`${what}: link ${name} not found`, 'ENODEV')
  return link
}

async function routeSpec (nl: Rtnl, plan: RoutePlan, links: Map<string, number>): Promise<RouteSpec> {
  let oif = links.get(plan.dev)
  if (oif === undefined) {
    oif = (await requireLink(nl, plan.dev, describeRoute(plan))).index
    links.set(plan.dev, oif)
  }
  return {
    family: plan.family,
    table: tableNumber(plan.table),
    dst: prefixOf(plan.dst),
    via: plan.via === null ? null : canonicalIp(plan.via.address),
    oif,
    src: plan.src === null ? null : canonicalIp(plan.src.address)
  }
}

/** An optional sysctl the kernel does not have (ENOENT) is skipped: there is nothing to set. */
async function sysctlMissing (s: SysctlPlan): Promise<boolean> {
  if (s.optional !== true) return false
  try {
    await readSysctl(s.path)
    return false
  } catch (err) {
    return (err as { errno?: string }).errno === 'ENOENT'
  }
}

async function applySysctl (s: SysctlPlan, undo: UndoStack | null): Promise<void> {
  if (await sysctlMissing(s)) return
  const change = await writeSysctl(s.path, s.value)
  if (change.changed && undo !== null) undo.push(`restore sysctl ${s.path}=${change.old}`, async () => await writeSysctl(s.path, change.old))
}

async function applyAddress (nl: Rtnl, a: AddressPlan, index: number, undo: UndoStack | null): Promise<void> {
  const cidr = { address: canonicalIp(a.cidr.address), prefix: a.cidr.prefix }
  const added = await nl.addAddress(index, a.cidr.family, cidr, { noPrefixRoute: a.noPrefixRoute })
  if (added && undo !== null) undo.push(`delete ${describeAddress(a)}`, async () => await nl.deleteAddress(index, a.cidr.family, cidr))
}

async function applyRoute (nl: Rtnl, r: RoutePlan, links: Map<string, number>, undo: UndoStack | null): Promise<void> {
  const spec = await routeSpec(nl, r, links)
  const existing = findRouteSlot(await nl.listRoutes(r.family, spec.table), r)
  if (existing !== undefined && routeMatches(existing, spec)) return
  await nl.replaceRoute(spec)
  if (undo === null) return
  if (existing !== undefined) {
    // A route was there (the pod's default route): put it back as it was, never just delete.
    undo.push(`restore the ${describeRoute(r).replace(/^route /, 'route it replaced: ')}`, async () => await nl.restoreRoute(existing))
  } else {
    undo.push(`delete ${describeRoute(r)}`, async () => await nl.deleteRoute(spec))
  }
}

async function applyRule (nl: Rtnl, r: RulePlan, undo: UndoStack | null): Promise<void> {
  const spec = ruleSpec(r)
  if ((await nl.listRules(r.family)).some(k => ruleMatches(k, spec))) return
  const added = await nl.addRule(spec)
  if (added && undo !== null) undo.push(`delete ${describeRule(r)}`, async () => await nl.deleteRule(spec))
}

/**
 * Applies the network plan in the order the kernel needs: create (or adopt) the macvlan, down;
 * its own sysctls (arp_notify / ndisc_notify must be set before up, or up announces nothing);
 * addresses; up (which announces); routes; rules; the remaining sysctls. Each change registers its
 * undo right after it succeeds; what was already as planned registers nothing.
 */
export async function applyNetwork (plan: NetworkPlan, nl: Rtnl, undo: UndoStack, options: ApplyNetworkOptions = {}): Promise<ApplyNetworkResult> {
  const name = plan.link.name
  let link: LinkState
  let created = false
  if (plan.link.action === 'create') {
    if (plan.link.parent === null || plan.link.mac === null) {
      throw new NetlinkError(`create macvlan ${name}: the plan names no parent or no MAC`, 'EINVAL')
    }
    const parent = await requireLink(nl, plan.link.parent, `create macvlan ${name}`)
    const outcome = await nl.createMacvlan({ name, parentIndex: parent.index, mode: plan.link.mode, mac: plan.link.mac, alias: OWNER_ALIAS })
    link = await requireLink(nl, name, `create macvlan ${name}`)
    if (outcome === 'created') {
      created = true
      const index = link.index
      undo.push(`delete link ${name}`, async () => await nl.deleteLink(index))
    } else if (link.kind !== 'macvlan') {
      throw new NetlinkError(`create macvlan ${name}: a ${link.kind ?? 'physical'} link of that name exists`, 'EEXIST')
    }
  } else {
    link = await requireLink(nl, name, `adopt link ${name}`)
  }
  const links = new Map<string, number>([[name, link.index]])

  for (const s of plan.sysctls) if (isLinkSysctl(s, name)) await applySysctl(s, undo)

  for (const a of plan.addresses) {
    const index = a.link === name ? link.index : (await requireLink(nl, a.link, describeAddress(a))).index
    await applyAddress(nl, a, index, undo)
  }

  const wasUp = link.up
  if (!wasUp) {
    await nl.setLinkUp(link.index, true)
    const index = link.index
    // a link we created goes away entirely; an adopted one goes back down as we found it
    if (!created) undo.push(`set link ${name} down`, async () => await nl.setLinkUp(index, false))
  } else {
    // Already up (adopted, or a restart): no up-event announcement, so ask for one now.
    await announce(nl, link.index)
  }

  for (const r of plan.routes) await applyRoute(nl, r, links, undo)
  for (const r of plan.rules) await applyRule(nl, r, undo)
  for (const s of plan.sysctls) if (!isLinkSysctl(s, name)) await applySysctl(s, undo)

  let reannounced: Promise<AnnounceOutcome> | null = null
  const delay = options.reannounceMs === undefined ? REANNOUNCE_MS : options.reannounceMs
  if (delay !== null) {
    const scheduled = scheduleAnnounce(nl, link.index, delay)
    undo.push(`cancel the second announcement on ${name}`, () => scheduled.cancel())
    reannounced = scheduled.done
  }
  return { linkIndex: link.index, created, reannounced }
}

// ---- drift and repair --------------------------------------------------------------------------

export type NetworkDrift =
  | { readonly kind: 'link-missing', readonly description: string }
  | { readonly kind: 'link-down', readonly description: string }
  | { readonly kind: 'sysctl', readonly description: string, readonly sysctl: SysctlPlan }
  | { readonly kind: 'address', readonly description: string, readonly address: AddressPlan }
  | { readonly kind: 'route', readonly description: string, readonly route: RoutePlan }
  | { readonly kind: 'rule', readonly description: string, readonly rule: RulePlan }

/**
 * The sysctls of the plan that differ from the kernel's: the part of the network no rtnetlink event reports
 * (the reconciler reads these every interval, the rest when the kernel says it changed).
 */
export async function diffSysctls (plan: Pick<NetworkPlan, 'sysctls'>): Promise<NetworkDrift[]> {
  const drifts: NetworkDrift[] = []
  for (const s of plan.sysctls) {
    if (await sysctlMissing(s)) continue
    let actual: string
    try {
      actual = await readSysctl(s.path)
    } catch {
      actual = '(missing)'
    }
    if (actual !== s.value) drifts.push({ kind: 'sysctl', description: `sysctl ${s.path} is ${actual}, want ${s.value}`, sysctl: s })
  }
  return drifts
}

/** What of the plan is missing or different in the kernel now, each drift in words. Reads only. */
export async function diffNetwork (plan: NetworkPlan, nl: Rtnl): Promise<NetworkDrift[]> {
  const name = plan.link.name
  const link = await nl.linkByName(name)
  if (link === null) return [{ kind: 'link-missing', description: `link ${name} is gone` }]
  const drifts: NetworkDrift[] = []
  if (!link.up) drifts.push({ kind: 'link-down', description: `link ${name} is down` })
  drifts.push(...await diffSysctls(plan))

  const families = new Set<Family>([...plan.addresses.map(a => a.cidr.family), ...plan.routes.map(r => r.family), ...plan.rules.map(r => r.family)])
  const addresses = await nl.listAddresses()
  const indexOf = new Map<string, number>([[name, link.index]])
  for (const a of plan.addresses) {
    let index = indexOf.get(a.link)
    if (index === undefined) {
      index = (await nl.linkByName(a.link))?.index ?? -1
      indexOf.set(a.link, index)
    }
    const want = canonicalIp(a.cidr.address)
    if (!addresses.some(x => x.index === index && x.prefix === a.cidr.prefix && x.address === want)) {
      drifts.push({ kind: 'address', description: `${describeAddress(a)} is gone`, address: a })
    }
  }

  for (const family of families) {
    const routes = await nl.listRoutes(family)
    for (const r of plan.routes.filter(x => x.family === family)) {
      const oif = indexOf.get(r.dev) ?? (await nl.linkByName(r.dev))?.index ?? -1
      const spec: RouteSpec = { family, table: tableNumber(r.table), dst: prefixOf(r.dst), via: r.via === null ? null : canonicalIp(r.via.address), oif, src: r.src === null ? null : canonicalIp(r.src.address) }
      const slot = findRouteSlot(routes, r)
      if (slot === undefined) {
        drifts.push({ kind: 'route', description: `${describeRoute(r)} is gone`, route: r })
      } else if (!routeMatches(slot, spec)) {
        const found = `${slot.via !== null ? `via ${slot.via} ` : ''}dev #${slot.oif ?? '?'}${slot.src !== null ? ` src ${slot.src}` : ''}`
        drifts.push({ kind: 'route', description: `${describeRoute(r)} changed: now ${found}`, route: r })
      }
    }
    const rules = await nl.listRules(family)
    for (const r of plan.rules.filter(x => x.family === family)) {
      if (!rules.some(k => ruleMatches(k, ruleSpec(r)))) drifts.push({ kind: 'rule', description: `${describeRule(r)} is gone`, rule: r })
    }
  }
  return drifts
}

const REPAIR_ORDER: ReadonlyArray<NetworkDrift['kind']> = ['link-missing', 'sysctl', 'address', 'link-down', 'route', 'rule']

/**
 * Re-applies only what drifted, in apply order, and returns the descriptions repaired. Registers
 * no undo: the undo registered when the thing was first applied still undoes it. A vanished link
 * is re-created (when we created it; an adopted link cannot be) by re-running the idempotent apply.
 */
export async function repairNetwork (plan: NetworkPlan, nl: Rtnl, drifts: readonly NetworkDrift[]): Promise<string[]> {
  const sorted = [...drifts].sort((a, b) => REPAIR_ORDER.indexOf(a.kind) - REPAIR_ORDER.indexOf(b.kind))
  const repaired: string[] = []
  const name = plan.link.name
  if (sorted.some(d => d.kind === 'link-missing')) {
    if (plan.link.action !== 'create') throw new NetlinkError(`repair: adopted link ${name} is gone and is not ours to re-create`, 'ENODEV')
    // a scratch stack: the re-created pieces are removed by cleanup (alias marker, our tables), not by this run's undo
    await applyNetwork(plan, nl, new UndoStack(), { reannounceMs: null })
    return sorted.map(d => d.description)
  }
  const link = await requireLink(nl, name, 'repair')
  const links = new Map<string, number>([[name, link.index]])
  for (const d of sorted) {
    switch (d.kind) {
      case 'sysctl': await applySysctl(d.sysctl, null); break
      case 'address': {
        const index = d.address.link === name ? link.index : (await requireLink(nl, d.address.link, 'repair')).index
        await applyAddress(nl, d.address, index, null)
        break
      }
      case 'link-down':
        await nl.setLinkUp(link.index, true)
        break
      case 'route': await applyRoute(nl, d.route, links, null); break
      case 'rule': await applyRule(nl, d.rule, null); break
      case 'link-missing': break
    }
    repaired.push(d.description)
  }
  return repaired
}

// ---- cleanup -----------------------------------------------------------------------------------

/** What cleanup may remove: no plan needed, so `egress-router cleanup` works without a valid config. */
export interface CleanupTargets {
  /** the macvlan name; deleted only if it carries OWNER_ALIAS */
  readonly linkName: string
  /** our numeric routing tables: every route in them goes (main/local/default are refused) */
  readonly tables: readonly number[]
  /** rules at these priorities that look up one of `tables` go */
  readonly rulePriorities: readonly number[]
  readonly families?: readonly Family[]
}

/** The cleanup targets a plan implies (its numeric tables and rule priorities). */
export function cleanupTargets (plan: NetworkPlan): CleanupTargets {
  const tables = new Set<number>()
  for (const r of plan.routes) if (r.table !== 'main') tables.add(r.table)
  for (const r of plan.rules) tables.add(r.table)
  return { linkName: plan.link.name, tables: [...tables], rulePriorities: [...new Set(plan.rules.map(r => r.priority))], families: [4, 6] }
}

/** Removes what this daemon may have created; idempotent. Returns what it removed, in words. */
export async function cleanupNetwork (targets: CleanupTargets, nl: Rtnl): Promise<string[]> {
  for (const t of targets.tables) {
    if (!Number.isInteger(t) || t <= 0 || t >= 253 && t <= RT_TABLE_LOCAL) throw new NetlinkError(`cleanup: refusing to flush table ${t}`, 'EINVAL')
  }
  const removed: string[] = []
  const tables = new Set(targets.tables)
  const priorities = new Set(targets.rulePriorities)
  for (const family of targets.families ?? [4, 6]) {
    for (const rule of await nl.listRules(family)) {
      if (!priorities.has(rule.priority) || !tables.has(rule.table)) continue
      if (await nl.deleteRule(rule)) removed.push(`IPv${family} rule priority ${rule.priority} lookup ${rule.table}`)
    }
    for (const route of await nl.listRoutes(family)) {
      if (!tables.has(route.table)) continue
      if (await nl.deleteRoute(route)) {
        removed.push(`IPv${family} route ${route.dst === null ? 'default' : `${route.dst.address}/${route.dst.prefix}`} table ${route.table}`)
      }
    }
  }
  const link = await nl.linkByName(targets.linkName)
  if (link !== null && link.alias === OWNER_ALIAS) {
    if (await nl.deleteLink(link.index)) removed.push(`link ${link.name}`)
  }
  return removed
}
