/**
 * Ruleset change events, from the kernel itself: a netfilter netlink socket subscribed to NFNLGRP_NFTABLES (what
 * `nft monitor` reads), in the process's network namespace. The reconcile loop checks our table when the kernel says
 * something changed, instead of forking `nft -j list table` every second. Every message is a change (ours included:
 * a check then finds nothing to do); one transaction sends several, and they are debounced into one onChange.
 *
 * No child process: an `nft monitor` child cost ~4.4 MiB of RSS, and it had to die with the daemon (pdeathsig) and
 * keep out of the daemon's process group. If the socket fails (ENOBUFS: the kernel dropped events because we read
 * too slowly) the caller is told (onError) and must check, a change may have been lost; if it closes it is reopened
 * with backoff.
 */
import type { NetlinkSocket } from 'netlink'

export interface NftMonitorOptions {
  /** called (debounced) after the ruleset changed; also once the socket is subscribed (and after a reopen) */
  onChange: () => void
  /** the socket failed or could not be opened (a change may have been missed: check); a closed socket is reopened */
  onError?: (err: Error) => void
  /** events closer together than this make one onChange; default 50 ms */
  debounceMs?: number
}

export interface NftMonitor {
  stop (): void
  /** netlink messages seen so far (for tests and metrics) */
  events (): number
}

/** linux/netlink.h */
const NETLINK_NETFILTER = 12
/** linux/netfilter/nfnetlink.h: every nf_tables change (tables, chains, rules, sets, and each transaction's NEWGEN) */
const NFNLGRP_NFTABLES = 7
const MAX_BACKOFF_MS = 30_000

export function startNftMonitor (opts: NftMonitorOptions): NftMonitor {
  const debounceMs = opts.debounceMs ?? 50
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
    const { createNetlink } = await import('netlink')
    if (stopped) return
    let s: NetlinkSocket
    try {
      s = createNetlink(NETLINK_NETFILTER)
      s.addMembership(NFNLGRP_NFTABLES)
    } catch (err) {
      failed(new Error(`nft events: cannot subscribe to NFNLGRP_NFTABLES: ${(err as Error)?.message ?? String(err)}; retrying in ${backoff} ms`))
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
    s.on('error', (err) => { failed(new Error(`nft events: ${err.message}`)) })
    s.once('close', () => {
      if (socket === s) socket = null
      if (stopped) return
      failed(new Error(`nft events: the netlink socket closed; reopening in ${backoff} ms`))
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
