/**
 * What the rtnetlink adapter reports and accepts, in plain data (no library types leak out), and
 * the `Rtnl` interface the apply layer is written against (handle.ts implements it on a socket).
 */
import type { Family, MacvlanMode } from '../config/types.js'

export const RT_TABLE_MAIN = 254
export const RT_TABLE_LOCAL = 255

/** An address with its prefix length, address in canonical text. */
export interface Prefix {
  readonly address: string
  readonly prefix: number
}

export interface LinkState {
  readonly index: number
  readonly name: string
  /** IFLA_INFO_KIND (`macvlan`, `veth`, …); null for physical NICs */
  readonly kind: string | null
  readonly macvlanMode: MacvlanMode | 'source' | null
  /** IFLA_LINK: the parent's ifindex (macvlan, vlan, veth peer), null if none */
  readonly parentIndex: number | null
  readonly mac: string | null
  /** IFF_UP: administratively up */
  readonly up: boolean
  /** IFF_LOWER_UP: carrier */
  readonly lowerUp: boolean
  /** IFLA_IFALIAS; our marker on links this daemon created (see OWNER_ALIAS) */
  readonly alias: string | null
}

export interface AddressState {
  readonly family: Family
  readonly index: number
  readonly address: string
  readonly prefix: number
  readonly tentative: boolean
  readonly dadFailed: boolean
}

/** What a route is to look like; `table` numeric (254 = main). */
export interface RouteSpec {
  readonly family: Family
  readonly table: number
  /** null = default route */
  readonly dst: Prefix | null
  readonly via: string | null
  readonly oif: number
  readonly src: string | null
}

export interface RouteState {
  readonly family: Family
  readonly table: number
  readonly dst: Prefix | null
  readonly via: string | null
  readonly oif: number | null
  readonly src: string | null
  /** RTA_PRIORITY (metric); 0 when absent */
  readonly metric: number
  /** RTN_* type name: UNICAST, LOCAL, BROADCAST, … */
  readonly type: string
  readonly protocol: string | number
  readonly scope: string | number
  /** the message as the kernel sent it, so a replaced route can be restored exactly */
  readonly raw: unknown
}

export interface RuleSpec {
  readonly family: Family
  readonly priority: number
  readonly from: Prefix | null
  readonly fwmark: number | null
  readonly table: number
}

export interface RuleState extends RuleSpec {
  readonly fwmask: number | null
  /** FR_ACT_*: toTbl, goto, blackhole, … */
  readonly action: string
}

export interface NeighbourState {
  readonly index: number
  readonly address: string
  /** NUD_* names that are set: reachable, stale, incomplete, failed, permanent, … */
  readonly state: readonly string[]
  readonly lladdr: string | null
}

export interface MacvlanSpec {
  readonly name: string
  readonly parentIndex: number
  readonly mode: MacvlanMode
  readonly mac: string
  /** IFLA_IFALIAS to set right after creation (the ownership marker) */
  readonly alias: string | null
}

/** The operations apply/ needs; every one is idempotent where the name says so. */
export interface Rtnl {
  listLinks (): Promise<LinkState[]>
  linkByName (name: string): Promise<LinkState | null>
  linkByIndex (index: number): Promise<LinkState | null>
  defaultRouteLink (family: Family): Promise<LinkState | null>
  /** 'created', or 'exists' if a link of that name is already there (nothing changed) */
  createMacvlan (spec: MacvlanSpec): Promise<'created' | 'exists'>
  setLinkUp (index: number, up: boolean): Promise<void>
  setLinkAlias (index: number, alias: string): Promise<void>
  setLinkMac (index: number, mac: string): Promise<void>
  /** false when already gone */
  deleteLink (index: number): Promise<boolean>
  listAddresses (family?: Family): Promise<AddressState[]>
  /** false when already there */
  addAddress (index: number, family: Family, cidr: Prefix, options?: { noPrefixRoute?: boolean }): Promise<boolean>
  /** false when already gone */
  deleteAddress (index: number, family: Family, cidr: Prefix): Promise<boolean>
  listRoutes (family: Family, table?: number): Promise<RouteState[]>
  replaceRoute (spec: RouteSpec): Promise<void>
  /** puts back a route exactly as listRoutes reported it */
  restoreRoute (route: RouteState): Promise<void>
  /** false when already gone */
  deleteRoute (route: RouteSpec | RouteState): Promise<boolean>
  listRules (family: Family): Promise<RuleState[]>
  /** false when an identical rule is already there */
  addRule (spec: RuleSpec): Promise<boolean>
  /** false when already gone */
  deleteRule (spec: RuleSpec): Promise<boolean>
  getNeighbour (index: number, address: string): Promise<NeighbourState | null>
  resolveNeighbour (index: number, address: string): Promise<void>
  close (): void
}
