/**
 * Kernel change events on a netlink socket subscribed to multicast groups, in the process's network namespace:
 * the reconcile loop re-reads what it keeps true when the kernel says it changed, instead of on a timer alone.
 * Every message is a change (ours included: a check then finds nothing to do); the messages of one change (a
 * transaction, an `ip addr del` that also removes routes) are debounced into one onChange.
 *
 * If the socket fails (ENOBUFS: the kernel dropped events because we read too slowly) the caller is told
 * (onError) and must check, a change may have been lost; if it closes it is reopened with backoff. Netlink never
 * drops an event silently: an overflow is that error.
 */
import type { NetlinkSocket } from 'netlink'
import { netlinkLibrary } from './library.js'

export interface NetlinkEventsOptions {
  /** the netlink protocol (linux/netlink.h): 0 NETLINK_ROUTE, 12 NETLINK_NETFILTER */
  protocol: number
  /** the multicast groups to join, each with its kernel name for messages */
  groups: ReadonlyArray<{ readonly id: number, readonly name: string }>
  /** what the events are, for messages ("nft events", "network events") */
  what: string
  /** called (debounced) after a change; also once the socket is subscribed (and after a reopen) */
  onChange: () => void
  /** the socket failed or could not be opened (a change may have been missed: check); a closed socket is reopened */
  onError?: (err: Error) => void
  /** events closer together than this make one onChange; default 50 ms */
  debounceMs?: number
}

export interface NetlinkEvents {
  stop (): void
  /** netlink messages seen so far (for tests and metrics) */
  events (): number
}

/** linux/netlink.h: the protocols the daemon listens on */
export const NETLINK_ROUTE = 0
export const NETLINK_NETFILTER = 12

const MAX_BACKOFF_MS = 30_000

export function startNetlinkEvents (opts: NetlinkEventsOptions): NetlinkEvents {
  const debounceMs = opts.debounceMs ?? 50
  const { what } = opts
  let socket: NetlinkSocket | null = null
  let stopped = false
  let events = 0
  let debounce: NodeJS.Timeout | null = null
  let reopen: NodeJS.Timeout | null = null
  let backoff = 500

  const changed = (): void => {
    if (stopped || debounce !== null) return
    debounce = setTimeout(() => {
      debounce = null
      if (!stopped) opts.onChange()
    }, debounceMs)
    debounce.unref()
  }

  const failed = (err: Error): void => {
    if (!stopped) opts.onError?.(err)
  }

  const retry = (): void => {
    if (stopped || reopen !== null) return
    reopen = setTimeout(() => { reopen = null; void open() }, backoff)
    reopen.unref()
    backoff = Math.min(backoff * 2, MAX_BACKOFF_MS)
  }

  const open = async (): Promise<void> => {
    // loaded here, not at the top: the daemon applies its rules before it loads the netlink library
    const { createNetlink } = netlinkLibrary()
    if (stopped) return
    let s: NetlinkSocket
    try {
      s = createNetlink(opts.protocol)
      for (const g of opts.groups) s.addMembership(g.id)
    } catch (err) {
      failed(new Error(`${what}: cannot subscribe to ${opts.groups.map((g) => g.name).join(', ')}: ${(err as Error)?.message ?? String(err)}; retrying in ${backoff} ms`))
      retry()
      return
    }
    socket = s
    s.on('message', () => {
      events++
      backoff = 500
      changed()
    })
    s.on('invalid', () => { events++; changed() })
    s.on('error', (err) => { failed(new Error(`${what}: ${err.message}`)) })
    s.once('close', () => {
      if (socket === s) socket = null
      if (stopped) return
      failed(new Error(`${what}: the netlink socket closed; reopening in ${backoff} ms`))
      retry()
    })
    // the monitor never holds the process open: the daemon's listeners and timers decide that
    s.unref()
    // subscribed: whatever changed before now is found by this first check
    changed()
  }

  void open().catch((err: unknown) => { failed(err instanceof Error ? err : new Error(String(err))); retry() })
  return {
    stop () {
      stopped = true
      if (debounce !== null) clearTimeout(debounce)
      if (reopen !== null) clearTimeout(reopen)
      socket?.close()
      socket = null
    },
    events: () => events
  }
}

/**
 * linux/rtnetlink.h: the groups of what the reconciler keeps true. Links (a macvlan deleted or set down),
 * addresses, routes and policy rules, both families. Sysctls send no events: the reconciler reads those itself.
 */
export const NETWORK_GROUPS = [
  { id: 1, name: 'RTNLGRP_LINK' },
  { id: 5, name: 'RTNLGRP_IPV4_IFADDR' },
  { id: 7, name: 'RTNLGRP_IPV4_ROUTE' },
  { id: 8, name: 'RTNLGRP_IPV4_RULE' },
  { id: 9, name: 'RTNLGRP_IPV6_IFADDR' },
  { id: 11, name: 'RTNLGRP_IPV6_ROUTE' },
  { id: 19, name: 'RTNLGRP_IPV6_RULE' }
] as const

/** Link, address, route and rule change events (rtnetlink), as startNetlinkEvents. */
export function startNetworkEvents (opts: Omit<NetlinkEventsOptions, 'protocol' | 'groups' | 'what'>): NetlinkEvents {
  return startNetlinkEvents({ ...opts, protocol: NETLINK_ROUTE, groups: NETWORK_GROUPS, what: 'network events' })
}
