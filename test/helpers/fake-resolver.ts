/**
 * An in-memory stand-in for the daemon's resolver (src/dns/resolver.ts) as its users see it: the test sets a
 * name's answer and every watcher hears the change, as with the real one. For unit tests of what follows
 * names; the real resolver is tested against dnsmasq (test/netns/dns-resolver.test.ts).
 */
import type { IpAddress } from '../../src/config/types.js'
import { DnsError } from '../../src/errors.js'
import type { WatchedAnswer, WatchingResolver } from '../../src/proxy/dns-forwarder.js'

const ip = (address: string): IpAddress => ({ address, family: address.includes(':') ? 6 : 4 })

/** An in-memory resolver whose answer the test changes; watchers hear every change, as the real one does. */
export class FakeResolver implements WatchingResolver {
  private readonly answers = new Map<string, WatchedAnswer>()
  private readonly watchers = new Map<string, Set<(r: WatchedAnswer) => void>>()
  resolveCalls = 0

  set (name: string, addresses: readonly string[], stale = false): void {
    const answer = { addresses: addresses.map(ip), stale }
    this.answers.set(name, answer)
    for (const w of this.watchers.get(name) ?? []) w(answer)
  }

  async resolve (name: string): Promise<{ addresses: readonly IpAddress[] }> {
    this.resolveCalls += 1
    const a = this.answers.get(name)
    if (a === undefined || a.addresses.length === 0) throw new DnsError('ESERVFAIL', name, 'no answer (fake)')
    return a
  }

  watch (name: string, onChange: (r: WatchedAnswer) => void): () => void {
    const set = this.watchers.get(name) ?? new Set()
    this.watchers.set(name, set)
    set.add(onChange)
    return () => { set.delete(onChange) }
  }

  peek (name: string): WatchedAnswer | undefined { return this.answers.get(name) }

  watching (name: string): number { return this.watchers.get(name)?.size ?? 0 }
}

