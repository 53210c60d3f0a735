/**
 * Ruleset change events, from the kernel itself: a netfilter netlink socket subscribed to NFNLGRP_NFTABLES (what
 * `nft monitor` reads), in the process's network namespace (netlink/events.ts). The reconcile loop checks our table
 * when the kernel says something changed, instead of forking `nft -j list table` every second.
 *
 * No child process: an `nft monitor` child cost ~4.4 MiB of RSS, and it had to die with the daemon (pdeathsig) and
 * keep out of the daemon's process group.
 */
import { NETLINK_NETFILTER, startNetlinkEvents, type NetlinkEvents, type NetlinkEventsOptions } from '../netlink/events.js'

export type NftMonitorOptions = Omit<NetlinkEventsOptions, 'protocol' | 'groups' | 'what'>
export type NftMonitor = NetlinkEvents

/** linux/netfilter/nfnetlink.h: every nf_tables change (tables, chains, rules, sets, and each transaction's NEWGEN) */
const NFNLGRP_NFTABLES = 7

export function startNftMonitor (opts: NftMonitorOptions): NftMonitor {
  return startNetlinkEvents({ ...opts, protocol: NETLINK_NETFILTER, groups: [{ id: NFNLGRP_NFTABLES, name: 'NFNLGRP_NFTABLES' }], what: 'nft events' })
}
