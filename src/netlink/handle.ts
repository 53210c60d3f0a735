/**
 * One rtnetlink socket, in the network namespace the process is in when it is opened. Every
 * request carries a timeout (the `netlink` package has none by default) and every failure comes
 * out as a NetlinkError with the errno. Requests are serialised: the kernel runs one dump per
 * socket at a time and answers a second concurrent one with EBUSY.
 */
import type { RtNetlinkSocket, rt, ifla } from 'netlink'
import type { Family } from '../config/types.js'
import { NetlinkError } from '../errors.js'
import { errnoOf, toNetlinkError } from './errno.js'
import { afOf, bufferToIp, familyOfAf, ipToBuffer } from './ip.js'
import { decodeLinkInfo, encodeMacvlanLinkInfo, readU32, u32 } from './linkinfo.js'
import { netlinkLibrary } from './library.js'
import { bufferToMac, macToBuffer } from './mac.js'
import {
  RT_TABLE_MAIN,
  type AddressState, type LinkState, type MacvlanSpec, type NeighbourState, type Prefix,
  type RouteSpec, type RouteState, type RuleSpec, type RuleState, type Rtnl
} from './types.js'

export interface HandleOptions {
  /** per request; default 5000 ms */
  readonly timeoutMs?: number
  /**
   * netlink port the requests go to; 0 (the default) is the kernel. Anything else is for talking to
   * a user-space netlink peer — the tests point it at a silent socket to prove the timeout.
   */
  readonly peerPort?: number
}

const { createRtNetlink, FlagsNew } = netlinkLibrary()

/** RT_TABLE_UNSPEC in the 8-bit header field when the real table is > 255 (carried in RTA_TABLE). */
const RT_TABLE_UNSPEC = 0
/** routes we install carry RTPROT_STATIC, as `ip route … proto static` would */
const OUR_PROTOCOL = 'STATIC'

function prefixOf (buf: Buffer | undefined, len: number | undefined): Prefix | null {
  if (buf === undefined || len === undefined || len === 0) return null
  return { address: bufferToIp(buf), prefix: len }
}

function flagNames (flags: object | undefined): string[] {
  if (flags === undefined) return []
  return Object.entries(flags).filter(([k, v]) => v === true && k !== '__unknown').map(([k]) => k)
}

function tableOf (msg: { data: { table?: number }, attrs: { table?: number } }): number {
  return msg.attrs.table ?? msg.data.table ?? RT_TABLE_MAIN
}

function headerTable (table: number): number {
  return table < 256 ? table : RT_TABLE_UNSPEC
}

/** First nexthop's ifindex of an RTA_MULTIPATH payload (struct rtnexthop: u16 len, u8 flags, u8 hops, s32 ifindex). */
function firstMultipathOif (buf: Buffer | undefined): number | null {
  if (buf === undefined || buf.length < 8) return null
  return readU32(buf, 4)
}

export class NetlinkHandle implements Rtnl {
  private readonly socket: RtNetlinkSocket
  private readonly timeoutMs: number
  private readonly peerPort: number
  private queue: Promise<unknown> = Promise.resolve()
  private closed = false

  private constructor (socket: RtNetlinkSocket, options: HandleOptions) {
    this.socket = socket
    this.timeoutMs = options.timeoutMs ?? 5000
    this.peerPort = options.peerPort ?? 0
  }

  /** Opens a socket in the current network namespace. It does not keep the event loop alive. */
  static open (options: HandleOptions = {}): NetlinkHandle {
    try {
      return new NetlinkHandle(createRtNetlink(), options)
    } catch (err) {
      throw toNetlinkError('open rtnetlink socket', err)
    }
  }

  close (): void {
    if (this.closed) return
    this.closed = true
    this.socket.socket.close()
  }

  /**
   * Runs one library call, serialised, with the timeout and the port, mapping any failure.
   * `call` receives the send options to pass through.
   */
  private async request<T> (operation: string, flags: number, call: (opts: { flags: number, timeout: number, port?: number }) => Promise<T>): Promise<T> {
    if (this.closed) throw new NetlinkError(operation, 'EBADF')
    const opts = { flags, timeout: this.timeoutMs, ...(this.peerPort !== 0 ? { port: this.peerPort } : {}) }
    const run = async (): Promise<T> => {
      try {
        return await call(opts)
      } catch (err) {
        throw toNetlinkError(operation, err)
      }
    }
    const result = this.queue.then(run, run)
    this.queue = result.catch(() => undefined)
    return await result
  }

  /** Runs a create; true if created, false if the kernel says it exists already (EEXIST). */
  private async create (operation: string, flags: number, call: (opts: { flags: number, timeout: number }) => Promise<unknown>): Promise<boolean> {
    try {
      await this.request(operation, flags, call)
      return true
    } catch (err) {
      if (errnoOf(err) === 'EEXIST') return false
      throw err
    }
  }

  /** Runs a delete; true if deleted, false if it was already gone. */
  private async remove (operation: string, call: (opts: { flags: number, timeout: number }) => Promise<unknown>): Promise<boolean> {
    try {
      await this.request(operation, 0, call)
      return true
    } catch (err) {
      const errno = errnoOf(err)
      if (errno === 'ENOENT' || errno === 'ENODEV' || errno === 'ESRCH' || errno === 'EADDRNOTAVAIL') return false
      throw err
    }
  }

  // ---- links -----------------------------------------------------------------------------------

  private static linkState (msg: rt.LinkMessage): LinkState {
    const info = decodeLinkInfo(msg.attrs.linkinfo)
    const flags = msg.data.flags ?? {}
    return {
      index: msg.data.index ?? 0,
      name: msg.attrs.ifname ?? '',
      kind: info.kind,
      macvlanMode: info.macvlanMode,
      parentIndex: msg.attrs.link !== undefined && msg.attrs.link.length >= 4 ? readU32(msg.attrs.link) : null,
      mac: msg.attrs.address !== undefined && msg.attrs.address.length === 6 ? bufferToMac(msg.attrs.address) : null,
      up: flags.up === true,
      lowerUp: flags.lowerUp === true,
      alias: msg.attrs.ifalias ?? null
    }
  }

  /** Equivalent to: ip -d link show */
  async listLinks (): Promise<LinkState[]> {
    const msgs = await this.request('list links', 0, async o => await this.socket.getLinks({}, {}, o))
    return msgs.map(m => NetlinkHandle.linkState(m))
  }

  /** Equivalent to: ip -d link show dev NAME (null if there is none) */
  async linkByName (name: string): Promise<LinkState | null> {
    return await this.#oneLink(`get link ${name}`, {}, { ifname: name })
  }

  async linkByIndex (index: number): Promise<LinkState | null> {
    return await this.#oneLink(`get link #${index}`, { index }, {})
  }

  /** RTM_GETLINK for one link; null when there is none (ENODEV). */
  async #oneLink (what: string, msg: { index?: number }, attrs: { ifname?: string }): Promise<LinkState | null> {
    try {
      const msgs = await this.request(what, 0, async o => await this.socket.getLink(msg, attrs, o))
      const m = msgs[0]
      return m === undefined ? null : NetlinkHandle.linkState(m)
    } catch (err) {
      if (errnoOf(err) === 'ENODEV') return null
      throw err
    }
  }

  /** The link of the main table's default route with the lowest metric (`ip -F route show default`). */
  async defaultRouteLink (family: Family): Promise<LinkState | null> {
    const routes = (await this.listRoutes(family, RT_TABLE_MAIN))
      .filter(r => r.dst === null && r.type === 'UNICAST' && r.oif !== null)
      .sort((a, b) => a.metric - b.metric)
    const first = routes[0]
    return first?.oif == null ? null : await this.linkByIndex(first.oif)
  }

  /** Equivalent to: ip link add NAME link PARENT address MAC type macvlan mode MODE; ip link set NAME alias ALIAS */
  async createMacvlan (spec: MacvlanSpec): Promise<'created' | 'exists'> {
    const attrs: ifla.LinkAttrs = {
      ifname: spec.name,
      link: u32(spec.parentIndex),
      address: macToBuffer(spec.mac),
      linkinfo: encodeMacvlanLinkInfo(spec.mode)
    }
    const created = await this.create(`create macvlan ${spec.name}`, FlagsNew.CREATE | FlagsNew.EXCL,
      async o => await this.socket.newLink({}, attrs, o))
    if (!created) return 'exists'
    // RTM_NEWLINK on create ignores IFLA_IFALIAS (rtnl_create_link does not read it): set it apart.
    if (spec.alias !== null) {
      const link = await this.linkByName(spec.name)
      if (link === null) throw new NetlinkError(`create macvlan ${spec.name}`, 'ENODEV')
      await this.setLinkAlias(link.index, spec.alias)
    }
    return 'created'
  }

  /** Equivalent to: ip link set dev X up|down */
  async setLinkUp (index: number, up: boolean): Promise<void> {
    await this.request(`set link #${index} ${up ? 'up' : 'down'}`, 0,
      async o => await this.socket.setLink({ index, flags: up ? { up: true } : {}, change: { up: true } }, {}, o))
  }

  /** Equivalent to: ip link set dev X alias ALIAS */
  async setLinkAlias (index: number, alias: string): Promise<void> {
    await this.request(`set link #${index} alias`, 0, async o => await this.socket.setLink({ index }, { ifalias: alias }, o))
  }

  /** Equivalent to: ip link set dev X address MAC (same MAC again = NETDEV_CHANGEADDR, see announce.ts) */
  async setLinkMac (index: number, mac: string): Promise<void> {
    await this.request(`set link #${index} address ${mac}`, 0,
      async o => await this.socket.setLink({ index }, { address: macToBuffer(mac) }, o))
  }

  /** Equivalent to: ip link del dev X; false when it was already gone */
  async deleteLink (index: number): Promise<boolean> {
    return await this.remove(`delete link #${index}`, async o => await this.socket.delLink({ index }, {}, o))
  }

  // ---- addresses -------------------------------------------------------------------------------

  /** Equivalent to: ip addr show (one family or both) */
  async listAddresses (family?: Family): Promise<AddressState[]> {
    const data = family === undefined ? {} : { family: afOf(family) }
    const msgs = await this.request('list addresses', 0, async o => await this.socket.getAddresses(data, {}, o))
    const out: AddressState[] = []
    for (const m of msgs) {
      const fam = familyOfAf(m.data.family ?? 0)
      const raw = m.attrs.local ?? m.attrs.address
      if (fam === null || raw === undefined) continue
      const flags = { ...m.data.flags, ...m.attrs.flags }
      out.push({
        family: fam,
        index: m.data.index ?? 0,
        address: bufferToIp(raw),
        prefix: m.data.prefixlen ?? 0,
        tentative: flags.tentative === true,
        dadFailed: flags.dadfailed === true
      })
    }
    return out
  }

  /**
   * Equivalent to: ip addr add ADDR/PREFIX dev X [nodad]; false when it is there already.
   * IPv6 gets IFA_F_NODAD: the reserved address is ours by contract and must be usable at once.
   */
  async addAddress (index: number, family: Family, cidr: Prefix, options: { noPrefixRoute?: boolean } = {}): Promise<boolean> {
    const bytes = ipToBuffer(cidr.address)
    // IFA_F_NOPREFIXROUTE (0x200) does not fit the 8-bit header field: it rides in IFA_FLAGS.
    const flags: rt.AddressFlags = { ...(family === 6 ? { nodad: true as const } : {}), ...(options.noPrefixRoute === true ? { noprefixroute: true as const } : {}) }
    const data: rt.Address = { family: afOf(family), prefixlen: cidr.prefix, index, flags: family === 6 ? { nodad: true } : {} }
    const attrs: rt.AddressAttrs = { local: bytes, ...(family === 4 ? { address: bytes } : {}), ...(Object.keys(flags).length > 0 ? { flags } : {}) }
    return await this.create(`add address ${cidr.address}/${cidr.prefix} to #${index}`, FlagsNew.CREATE | FlagsNew.EXCL,
      async o => await this.socket.newAddress(data, attrs, o))
  }

  /** Equivalent to: ip addr del ADDR/PREFIX dev X; false when it was already gone */
  async deleteAddress (index: number, family: Family, cidr: Prefix): Promise<boolean> {
    const bytes = ipToBuffer(cidr.address)
    const attrs: rt.AddressAttrs = family === 4 ? { local: bytes, address: bytes } : { local: bytes }
    return await this.remove(`delete address ${cidr.address}/${cidr.prefix} from #${index}`,
      async o => await this.socket.delAddress({ family: afOf(family), prefixlen: cidr.prefix, index }, attrs, o))
  }

  // ---- routes ----------------------------------------------------------------------------------

  /** Equivalent to: ip [-6] route show table all (or one table); cached clones left out */
  async listRoutes (family: Family, table?: number): Promise<RouteState[]> {
    const msgs = await this.request('list routes', 0, async o => await this.socket.getRoutes({ family: afOf(family) }, {}, o))
    const out: RouteState[] = []
    for (const m of msgs) {
      if (m.data.flags?.cloned === true) continue
      const t = tableOf(m)
      if (table !== undefined && t !== table) continue
      out.push({
        family,
        table: t,
        dst: prefixOf(m.attrs.dst, m.data.dstLen),
        via: m.attrs.gateway === undefined ? null : bufferToIp(m.attrs.gateway),
        oif: m.attrs.oif ?? firstMultipathOif(m.attrs.multipath),
        src: m.attrs.prefsrc === undefined ? null : bufferToIp(m.attrs.prefsrc),
        metric: m.attrs.priority ?? 0,
        type: String(m.data.type ?? 'UNSPEC'),
        protocol: m.data.protocol ?? 0,
        scope: m.data.scope ?? 0,
        raw: m
      })
    }
    return out
  }

  /** Equivalent to: ip route replace DST [via GW] dev X [src SRC] table T proto static (scope link without via) */
  async replaceRoute (spec: RouteSpec): Promise<void> {
    const data: rt.Route = {
      family: afOf(spec.family),
      dstLen: spec.dst?.prefix ?? 0,
      table: headerTable(spec.table),
      protocol: OUR_PROTOCOL,
      scope: spec.via === null ? 'LINK' : 'UNIVERSE',
      type: 'UNICAST'
    }
    const attrs: rt.RouteAttrs = {
      table: spec.table,
      oif: spec.oif,
      ...(spec.dst !== null ? { dst: ipToBuffer(spec.dst.address) } : {}),
      ...(spec.via !== null ? { gateway: ipToBuffer(spec.via) } : {}),
      ...(spec.src !== null ? { prefsrc: ipToBuffer(spec.src) } : {})
    }
    await this.request(`replace route ${describeRoute(spec)}`, FlagsNew.CREATE | FlagsNew.REPLACE,
      async o => await this.socket.newRoute(data, attrs, o))
  }

  /** Puts back a route exactly as the kernel reported it (same protocol, scope, metric, metrics). */
  async restoreRoute (route: RouteState): Promise<void> {
    const m = route.raw as rt.RouteMessage
    const a = m.attrs
    const attrs: rt.RouteAttrs = {}
    for (const key of ['dst', 'src', 'oif', 'gateway', 'priority', 'prefsrc', 'metrics', 'table', 'multipath', 'flow', 'pref', 'mark', 'encapType', 'encap', 'via'] as const) {
      if (a[key] !== undefined) (attrs as Record<string, unknown>)[key] = a[key]
    }
    const { flags: _ignored, ...data } = m.data
    await this.request(`restore route ${describeRoute(route)}`, FlagsNew.CREATE | FlagsNew.REPLACE,
      async o => await this.socket.newRoute({ ...data, flags: {} }, attrs, o))
  }

  /** Equivalent to: ip route del DST [via GW] dev X table T [metric M]; false when already gone */
  async deleteRoute (route: RouteSpec | RouteState): Promise<boolean> {
    // scope NOWHERE = match any scope (as iproute2 sends for `ip route del`); universe would miss scope-link routes
    const data: rt.Route = { family: afOf(route.family), dstLen: route.dst?.prefix ?? 0, table: headerTable(route.table), scope: 'NOWHERE' }
    const attrs: rt.RouteAttrs = {
      table: route.table,
      ...(route.oif !== null ? { oif: route.oif } : {}),
      ...(route.dst !== null ? { dst: ipToBuffer(route.dst.address) } : {}),
      ...(route.via !== null ? { gateway: ipToBuffer(route.via) } : {}),
      ...('metric' in route && route.metric !== 0 ? { priority: route.metric } : {})
    }
    return await this.remove(`delete route ${describeRoute(route)}`, async o => await this.socket.delRoute(data, attrs, o))
  }

  // ---- rules -----------------------------------------------------------------------------------

  /** Equivalent to: ip [-6] rule show */
  async listRules (family: Family): Promise<RuleState[]> {
    const msgs = await this.request('list rules', 0, async o => await this.socket.getRules({ family: afOf(family) }, {}, o))
    return msgs.map(m => ({
      family,
      priority: m.attrs.priority ?? 0,
      from: prefixOf(m.attrs.src, m.data.srcLen),
      fwmark: m.attrs.fwmark ?? null,
      fwmask: m.attrs.fwmask ?? null,
      table: tableOf(m as unknown as { data: { table?: number }, attrs: { table?: number } }),
      action: String(m.data.action ?? 'unspec')
    }))
  }

  private static ruleMessage (spec: RuleSpec): { data: rt.Rule, attrs: rt.RuleAttrs } {
    return {
      data: { family: afOf(spec.family), srcLen: spec.from?.prefix ?? 0, table: headerTable(spec.table), action: 'toTbl' },
      attrs: {
        priority: spec.priority,
        table: spec.table,
        ...(spec.from !== null ? { src: ipToBuffer(spec.from.address) } : {}),
        ...(spec.fwmark !== null ? { fwmark: spec.fwmark, fwmask: 0xffffffff } : {})
      }
    }
  }

  /**
   * Equivalent to: ip rule add [from SRC] [fwmark M] lookup T priority P. NLM_F_EXCL makes the
   * kernel refuse an identical rule (EEXIST) instead of stacking a duplicate: false then.
   */
  async addRule (spec: RuleSpec): Promise<boolean> {
    const { data, attrs } = NetlinkHandle.ruleMessage(spec)
    return await this.create(`add rule ${describeRule(spec)}`, FlagsNew.CREATE | FlagsNew.EXCL,
      async o => await this.socket.newRule(data, attrs, o))
  }

  /** Equivalent to: ip rule del [from SRC] [fwmark M] lookup T priority P; false when already gone */
  async deleteRule (spec: RuleSpec): Promise<boolean> {
    const { data, attrs } = NetlinkHandle.ruleMessage(spec)
    return await this.remove(`delete rule ${describeRule(spec)}`, async o => await this.socket.delRule(data, attrs, o))
  }

  // ---- neighbours ------------------------------------------------------------------------------

  /** Equivalent to: ip neigh show ADDR dev X (null when there is no entry) */
  async getNeighbour (index: number, address: string): Promise<NeighbourState | null> {
    const bytes = ipToBuffer(address)
    const family = bytes.length === 4 ? 4 : 6
    const msgs = await this.request(`get neighbour ${address}`, 0,
      async o => await this.socket.getNeighbors({ family: afOf(family) }, {}, o))
    for (const m of msgs) {
      if (m.data.ifindex !== index || m.attrs.dst === undefined || !m.attrs.dst.equals(bytes)) continue
      return {
        index,
        address: bufferToIp(m.attrs.dst),
        state: flagNames(m.data.state),
        lladdr: m.attrs.lladdr !== undefined && m.attrs.lladdr.length === 6 ? bufferToMac(m.attrs.lladdr) : null
      }
    }
    return null
  }

  /**
   * Equivalent to: ip neigh replace ADDR dev X use. NTF_USE makes the kernel run neigh_event_send:
   * a missing entry starts resolution (ARP request / neighbour solicitation) at once, without any
   * user packet being sent. Poll getNeighbour for the outcome.
   */
  async resolveNeighbour (index: number, address: string): Promise<void> {
    const bytes = ipToBuffer(address)
    const data: rt.Neighbor = {
      family: afOf(bytes.length === 4 ? 4 : 6),
      ifindex: index,
      state: {},
      flags: { use: true }
    }
    await this.request(`resolve neighbour ${address} on #${index}`, FlagsNew.CREATE | FlagsNew.REPLACE,
      async o => await this.socket.newNeighbor(data, { dst: bytes }, o))
  }
}

export function describeRoute (r: { table: number, dst: Prefix | null, via: string | null, oif: number | null }): string {
  const dst = r.dst === null ? 'default' : `${r.dst.address}/${r.dst.prefix}`
  const table = r.table === RT_TABLE_MAIN ? 'main' : String(r.table)
  return `${dst}${r.via !== null ? ` via ${r.via}` : ''}${r.oif !== null ? ` dev #${r.oif}` : ''} table ${table}`
}

export function describeRule (r: RuleSpec): string {
  const from = r.from === null ? '' : ` from ${r.from.address}/${r.from.prefix}`
  const mark = r.fwmark === null ? '' : ` fwmark 0x${r.fwmark.toString(16)}`
  return `priority ${r.priority}${from}${mark} lookup ${r.table}`
}
