/**
 * The listeners of the proxy modes, started from the plan: the HTTP proxy on each pod-side address, or one
 * forwarder per EGRESS_DNS_PROXY_DESTINATION line. Readiness says whether they are open and, for forwards to
 * names, whether the names resolved. DNS client statistics are mirrored into the metrics.
 */
import { readFileSync } from 'node:fs'
import type { Logger } from 'pino'
import { proxiedForwards } from '../config/dns-forwards.js'
import type { Config } from '../config/types.js'
import type { Resolver } from '../dns/resolver.js'
import type { Readiness } from '../observe/health.js'
import type { Metrics } from '../observe/metrics.js'
import type { ListenerPlan } from '../plan/types.js'
import type { DnsProxy } from '../proxy/dns-forwarder.js'
import type { HttpProxyServer } from '../proxy/http-proxy.js'

export interface ModeServers {
  /** a reloaded configuration: the ACL, or the forwards (listeners opened and closed to match) */
  update (config: Config): Promise<void>
  close (drainMs: number): Promise<void>
}

const READY_POLL_MS = 1000

/** The proxy modes' DNS client, from /etc/resolv.conf and the EGRESS_DNS_* clamps. */
export async function openResolver (config: Config, logger: Logger): Promise<Resolver> {
  const { Resolver } = await import('../dns/resolver.js')
  let text = ''
  try {
    text = readFileSync('/etc/resolv.conf', 'utf8')
  } catch (err) {
    logger.warn({ err }, '/etc/resolv.conf is not readable; using the resolver defaults')
  }
  return Resolver.fromResolvConf(text, { minTtlMs: config.dns.minTtlMs, maxTtlMs: config.dns.maxTtlMs, maxStaleMs: config.dns.maxStaleMs }, logger.child({ component: 'dns' }))
}

function mirrorDnsStats (resolver: Resolver, metrics: Metrics): () => void {
  let last = { queries: 0, answers: 0, failures: 0 }
  const sync = (): void => {
    const s = resolver.stats()
    if (s.queries > last.queries) metrics.dnsQueries.inc({ type: 'all' }, s.queries - last.queries)
    if (s.answers > last.answers) metrics.dnsAnswers.inc({ rcode: 'ok' }, s.answers - last.answers)
    if (s.failures > last.failures) metrics.dnsFailures.inc({ reason: 'transient' }, s.failures - last.failures)
    metrics.dnsCacheEntries.set({ state: 'fresh' }, s.cacheEntries - s.staleEntries)
    metrics.dnsCacheEntries.set({ state: 'stale' }, s.staleEntries)
    last = { queries: s.queries, answers: s.answers, failures: s.failures }
  }
  const timer = setInterval(sync, 5000)
  timer.unref()
  metrics.beforeScrape.add(sync)
  return () => { clearInterval(timer); metrics.beforeScrape.delete(sync); sync() }
}

export async function startModeServers (deps: { config: Config, listeners: readonly ListenerPlan[], listenHosts: readonly string[], resolver: Resolver, logger: Logger, metrics: Metrics, readiness: Readiness }): Promise<ModeServers> {
  const { config, listeners, listenHosts, resolver, logger, metrics, readiness } = deps
  const source = { address: config.source.address, family: config.source.family }
  const stopStats = mirrorDnsStats(resolver, metrics)

  // Each mode loads only its own server: the http proxy brings undici's dispatchers (several MiB of RSS), which a
  // dns-proxy has no use for.
  if (config.mode === 'http-proxy' && config.httpProxy !== null) {
    const { createHttpProxyServer } = await import('../proxy/http-proxy.js')
    const proxy: HttpProxyServer = createHttpProxyServer({ config: config.httpProxy, sourceAddress: source.address, resolver, logger: logger.child({ component: 'http-proxy' }), metrics })
    const hosts = listeners.filter((l) => l.kind === 'http-proxy')
    if (hosts.length === 0) throw new Error(`no address on ${config.podInterface} to listen on`)
    for (const l of hosts) {
      await proxy.listen(l.host, l.port)
      logger.info({ event: 'listening', kind: 'http-proxy', host: l.host, port: l.port }, `http proxy listening on ${l.host}:${l.port}`)
    }
    readiness.set('listeners', true)
    return {
      update: async (next) => {
        if (next.httpProxy === null) return
        proxy.update(next.httpProxy)
      },
      close: async (drainMs) => {
        stopStats()
        await proxy.close(drainMs)
      }
    }
  }

  if (config.mode === 'dns-proxy' && config.dnsProxy !== null) {
    const { createDnsProxy } = await import('../proxy/dns-forwarder.js')
    const forwards = proxiedForwards(config.dnsProxy)
    // On every pod-side address. (Under EGRESS_DNS_PROXY_FORWARDING=kernel the daemon has no listeners to start:
    // every forward is a DNAT rule, see kernel-names.ts.)
    if (listenHosts.length === 0) throw new Error(`no address on ${config.podInterface} to listen on`)
    const proxies: DnsProxy[] = listenHosts.map((host) => createDnsProxy({
      forwards,
      listenHost: host,
      sourceAddress: source,
      resolver,
      logger: logger.child({ component: 'dns-proxy' }),
      metrics
    }))
    for (const p of proxies) await p.listen()
    for (const f of forwards) {
      const target = f.target.kind === 'ip' ? f.target.address.address : f.target.name
      logger.info({ event: 'listening', kind: 'dns-forward', hosts: listenHosts, port: f.port, target, targetPort: f.targetPort }, `forwarding port ${f.port} to ${target}:${f.targetPort}`)
    }
    readiness.set('listeners', true)
    // names resolved: a forward to a name that does not resolve keeps readiness false
    const poll = (): void => {
      const ready = proxies.every((p) => p.ready())
      const waiting = proxies.flatMap((p) => p.stats()).filter((s) => !s.ready).map((s) => s.target)
      readiness.set('names', ready, ready ? '' : `no address yet for ${[...new Set(waiting)].join(', ')}`)
    }
    poll()
    const timer = setInterval(poll, READY_POLL_MS)
    timer.unref()
    return {
      update: async (next) => {
        if (next.dnsProxy === null) return
        for (const p of proxies) await p.update(proxiedForwards(next.dnsProxy))
        poll()
      },
      close: async (drainMs) => {
        clearInterval(timer)
        stopStats()
        await Promise.all(proxies.map(async (p) => await p.close(drainMs)))
      }
    }
  }
  throw new Error(`mode ${config.mode} has no listeners`)
}
