/**
 * The host names of the dns-proxy forwards in the kernel (EGRESS_DNS_PROXY_FORWARDING=kernel), followed through
 * the daemon's resolver. Each name is watched: the resolver re-asks it before its TTL runs out and keeps the last
 * good answer while every nameserver fails. Whenever the addresses of a name change, `onChange` runs once (changes
 * that arrive together are coalesced) and the daemon rewrites the DNAT rules from `resolved` (plan/kernel-nat.ts).
 * Connections already established keep their destination: their conntrack entries hold their DNAT.
 *
 *   const names = followKernelNames({ names: ['db.example.com'], resolver, logger, onChange: rewriteRules })
 *   names.resolved.get('db.example.com')   // the addresses of its last answer, once there is one
 */
import type { Logger } from 'pino'
import type { IpAddress } from '../config/types.js'
import { sameAddresses } from '../dns/ip.js'
import type { ResolvedNames } from '../plan/kernel-nat.js'
import type { WatchingResolver } from '../proxy/dns-forwarder.js'

export interface KernelNames {
  /** lower-case name → the addresses of its last answer; a name without an answer yet is absent */
  readonly resolved: ResolvedNames
  /** Follows these names from now on (a reload): new ones are watched, the others forgotten. */
  follow: (names: readonly string[]) => void
  close: () => void
}

export interface KernelNamesOptions {
  names: readonly string[]
  resolver: WatchingResolver
  logger: Logger
  /** the addresses of at least one name changed (also: a name was dropped) */
  onChange: () => void
}

export function followKernelNames (opts: KernelNamesOptions): KernelNames {
  const { resolver, logger } = opts
  const resolved = new Map<string, readonly IpAddress[]>()
  /** name → its unwatch function */
  const watched = new Map<string, () => void>()
  let pending = false
  let closed = false

  const changed = (): void => {
    if (pending || closed) return
    pending = true
    setImmediate(() => {
      pending = false
      if (!closed) opts.onChange()
    })
  }

  const set = (name: string, addresses: readonly IpAddress[]): void => {
    if (closed || !watched.has(name)) return
    const before = resolved.get(name)
    if (before !== undefined && sameAddresses(before, addresses)) return
    if (addresses.length === 0 && before === undefined) return
    resolved.set(name, addresses)
    changed()
  }

  const watch = (name: string): void => {
    watched.set(name, resolver.watch(name, (r) => { set(name, r.addresses) }))
    const now = resolver.peek(name)
    if (now !== undefined) { set(name, now.addresses); return }
    // Nothing cached yet: ask once now rather than wait for the watch's first refresh. Retries with backoff are
    // the resolver's; watch() brings whatever it finds later.
    resolver.resolve(name).then((r) => { if (!resolved.has(name)) set(name, r.addresses) }, (err: unknown) => {
      if (watched.has(name)) logger.warn({ event: 'kernel-forward', target: name, err }, `${name} does not resolve yet: its kernel forward refuses connections until it does`)
    })
  }

  const follow = (names: readonly string[]): void => {
    const wanted = new Set(names)
    let dropped = false
    for (const [name, unwatch] of watched) {
      if (wanted.has(name)) continue
      unwatch()
      watched.delete(name)
      dropped = resolved.delete(name) || dropped
    }
    for (const name of wanted) if (!watched.has(name)) watch(name)
    if (dropped) changed()
  }

  follow(opts.names)
  return {
    resolved,
    follow,
    close: () => {
      closed = true
      for (const unwatch of watched.values()) unwatch()
      watched.clear()
    }
  }
}
