/**
 * Wires one mode into a running daemon: host facts → plan → network → nft → listeners → reconcile, as
 * start/stop pairs. SIGTERM/SIGINT drain and stop (exit 0): the proxy modes close their listeners and let the
 * connections in flight finish; redirect mode in host routing refuses new redirected connections and waits for the
 * kernel's flows (redirect-drain.ts) before it removes its rules. SIGHUP re-reads the `_FILE` configurations.
 * A failed start rolls back what started and returns 1, naming the step. With EGRESS_WORKERS > 1 the proxy
 * modes' listeners run in worker processes (worker-pool.ts); everything else stays here.
 */
import { availableParallelism } from 'node:os'
import type { Logger } from 'pino'
import { loadConfig } from '../cli.js'
import { resolveWorkers } from '../config/config.js'
import { kernelForwards, kernelNames } from '../config/dns-forwards.js'
import type { Config, RawSettings } from '../config/types.js'
import { formatIssue } from '../errors.js'
import { gatherFacts } from '../apply/facts.js'
import { applyNetwork, cleanupNetwork, cleanupTargets, type ApplyNetworkResult } from '../apply/network.js'
import { Reconciler } from '../apply/reconcile.js'
import { UndoStack } from '../apply/undo.js'
import { deleteMarkedFlows, deleteStaleConntrack } from '../apply/conntrack.js'
import type { Rtnl } from '../netlink/types.js'
import { createNftRunner } from '../nft/runner.js'
import { createHealthServer, Readiness } from '../observe/health.js'
import { createLogger, type LogFormat } from '../observe/log.js'
import type { Metrics } from '../observe/metrics.js'
import { notify, readyState, reloadingState, stoppingState } from '../observe/sd-notify.js'
import { FWMARK } from '../plan/marks.js'
import { kernelNat, NO_NAMES, relaysInKernel, type NatRule, type ResolvedNames } from '../plan/kernel-nat.js'
import { nftPlan } from '../plan/nft-script.js'
import { buildPlan } from '../plan/plan.js'
import type { Plan } from '../plan/types.js'
import type { Resolver } from '../dns/resolver.js'
import { Lifecycle, StartError } from './hooks.js'
import type { KernelNames } from './kernel-names.js'
import { watchGateway } from './gateway-check.js'
import type { WorkerPool } from './worker-pool.js'
import { drainRedirect } from './redirect-drain.js'
import { onSignals } from './signals.js'
import { capYoungGeneration } from './young-generation.js'

export interface DaemonOptions {
  logFormat?: LogFormat
  /** env + flags, to re-read the `_FILE` configurations on SIGHUP */
  env?: Record<string, string | undefined>
  flags?: Record<string, string | undefined>
  /** the settings `config` was parsed from: EGRESS_WORKERS > 1 hands them to the workers */
  settings?: RawSettings
}

/** The proxy modes' listeners: in this process, or in EGRESS_WORKERS worker processes. */
interface Serving {
  update (config: Config, settings: RawSettings): Promise<void>
  close (drainMs: number): Promise<void>
}

/** Runs until a signal stops it (redirect and proxy modes) or until set up (init). Returns the exit code. */
export async function runDaemon (config: Config, opts: DaemonOptions = {}): Promise<number> {
  const logger = createLogger({ level: config.logLevel, format: opts.logFormat })
  // Loaded after the rules are in place (prom-client and the netlink library are the slowest modules to load):
  // the NAT rules need neither, and the time until they are in place is what clients wait for.
  let metrics: Metrics | null = null
  let notifiedReady = false
  const readiness = new Readiness((ready) => {
    // Init mode sets up and exits: it never serves, so it has no readiness to report (its network check alone
    // would otherwise read as "ready" before the rules are in place).
    if (config.mode === 'init') return
    metrics?.ready.set(ready ? 1 : 0)
    if (ready) {
      logger.info({ event: 'readiness', ready }, 'ready')
    } else {
      // name what is missing, so the log says what /readyz says
      const failing = Object.entries(readiness.report()).filter(([, c]) => !c.ok).map(([name, c]) => c.detail === '' ? name : `${name}: ${c.detail}`)
      logger.info({ event: 'readiness', ready, failing }, `not ready: ${failing.join('; ')}`)
    }
    if (ready && !notifiedReady) {
      notifiedReady = true
      void notify(readyState(`serving (${config.modeName})`))
    }
  })
  // Every check is known (and false) before anything starts: ready only when all of them have passed.
  for (const check of config.mode === 'init' ? [] : ['network', 'rules', 'listeners', 'gateway']) readiness.set(check, false, 'not set up yet')
  logger.info({ event: 'start', mode: config.modeName, source: `${config.source.address}/${config.source.prefix}`, gateway: config.gateway.address, routing: config.routing }, 'egress-router starting')

  const life = new Lifecycle()
  const undo = new UndoStack()
  let nl: Rtnl | null = null
  let plan: Plan | null = null
  let reconciler: Reconciler | null = null
  let servers: Serving | null = null
  let pool: WorkerPool | null = null
  const workers = resolveWorkers(config, availableParallelism())
  const kernelForwarding = config.mode === 'dns-proxy' && config.dnsProxy?.forwarding === 'kernel'
  let stopGateway: (() => void) | null = null
  let network: ApplyNetworkResult | null = null
  const nft = createNftRunner()
  let rulesSetupMs = 0
  // A failed start rolls everything back; a normal stop removes what we made only in host routing (in a pod
  // the namespace dies with us, and the OpenShift image left its state in place too).
  let rollingBack = true
  const cleanOnStop = (): boolean => rollingBack || config.routing === 'host'

  // The NAT rules first: they need only the configuration (the macvlan is named in it), and the forward chain
  // drops redirected traffic that would not leave through the macvlan, so rules ahead of the link are safe.
  const earlyRules = { nft: nftPlan(config, { macvlan: config.macvlan.name }) }
  life.append({
    name: 'nft rules',
    start: async () => {
      reconciler = new Reconciler({ plan: earlyRules, nft, logger })
      let setupMs = 0
      let hash: string
      try {
        hash = await reconciler.applyRules(earlyRules, () => { setupMs = performance.now() })
      } catch (err) {
        // Say what is missing (nft absent, no CAP_NET_ADMIN, no nf_tables) when that is the reason.
        await nft.probe()
        throw err
      }
      logger.info({ event: 'rules', table: `${earlyRules.nft.family} ${earlyRules.nft.table}`, hash, setupMs: Math.round(setupMs) }, 'nft rules applied')
      // the daemon owns the rules (its workers, if any, only the listeners): it names the dns-proxy forwards they carry
      for (const f of kernelForwards(config.dnsProxy)) {
        if (f.target.kind !== 'ip') continue
        const target = f.target.address.address
        logger.info({ event: 'kernel-forward', port: f.port, target, targetPort: f.targetPort, line: f.line }, `port ${f.port} to ${target}:${f.targetPort} in the kernel (DNAT)`)
      }
      rulesSetupMs = setupMs
      readiness.set('rules', true)
      // after the rules, so that start-up does not pay for the extra scavenges of a small young generation
      const heapFlag = capYoungGeneration()
      logger.debug({ event: 'heap', flag: heapFlag }, heapFlag === null ? 'young generation: as the operator set it' : `young generation: ${heapFlag}`)
    },
    stop: async () => {
      await reconciler?.stop()
      if (!cleanOnStop()) return
      const p = earlyRules
      await nft.deleteTable(p.nft.family, p.nft.table)
      // Flows still carrying our mark (cut at the drain deadline) would keep NAT bindings to an address that is
      // gone: delete them so their next packet gets a reset instead of silence.
      const flows = config.routing === 'host' ? await deleteMarkedFlows(config.source.family, FWMARK) : 0
      logger.info({ event: 'cleanup', what: 'nft', flowsDeleted: flows }, `nft table ${p.nft.family} ${p.nft.table} removed`)
    }
  })

  life.append({
    name: 'metrics',
    start: async () => {
      const { createMetrics } = await import('../observe/metrics.js')
      metrics = createMetrics()
      metrics.setupSeconds.set(rulesSetupMs / 1000)
      metrics.ready.set(readiness.ready() ? 1 : 0)
    }
  })

  // /healthz answers while the rest is set up; /readyz says not yet.
  if (config.health !== null && config.mode !== 'init') {
    const { host, port } = config.health
    let health: ReturnType<typeof createHealthServer> | null = null
    life.append({
      name: `health listener ${host === '' ? '*' : host}:${port}`,
      start: async () => {
        const m = metrics as Metrics
        // with workers, /metrics adds up theirs and the primary's (who alone has the setup and reconcile ones)
        const scrape = async (): Promise<string> => {
          if (pool === null) return await m.registry.metrics()
          const { aggregateText } = await import('../observe/metrics.js')
          return await aggregateText(m, await pool.metrics())
        }
        health = createHealthServer({ readiness, metrics: m, scrape })
        await health.listen(host, port)
      },
      stop: async () => { await (health as ReturnType<typeof createHealthServer> | null)?.close() }
    })
  }

  life.append({
    name: 'rtnetlink',
    start: async () => {
      const { NetlinkHandle } = await import('../netlink/handle.js')
      nl = NetlinkHandle.open()
    },
    stop: () => { (nl as Rtnl | null)?.close(); nl = null }
  })

  life.append({
    name: 'plan',
    start: async () => {
      const facts = await gatherFacts(config, nl as Rtnl)
      plan = buildPlan(config, facts)
      // the rules went in before the plan: they must be the plan's own (the only input they share is the link name)
      if (plan.nft.script !== earlyRules.nft.script) throw new Error('internal: the planned nft script differs from the one applied at start')
      logger.debug({ event: 'plan', link: plan.network.link, listeners: plan.listeners }, 'planned')
    }
  })

  /** Undoes what this run changed in the network, in reverse; each step that could not be undone is logged. */
  const unwindNetwork = async (): Promise<Awaited<ReturnType<UndoStack['unwind']>>> => {
    const result = await undo.unwind()
    for (const f of result.failed) logger.error({ event: 'cleanup-failed', step: f.name, err: f.error }, `could not ${f.name}`)
    return result
  }

  life.append({
    name: 'network setup',
    start: async () => {
      const p = plan as Plan
      try {
        network = await applyNetwork(p.network, nl as Rtnl, undo)
      } catch (err) {
        // A step that fails is not stopped by the lifecycle (only the steps before it are): what this one had
        // already changed (a macvlan made before a sysctl failed) is undone here, in reverse.
        const { undone } = await unwindNetwork()
        if (undone.length > 0) logger.info({ event: 'cleanup', what: 'network', undone }, 'partial network changes removed')
        throw err
      }
      const verb = network.created ? 'created' : p.network.link.action === 'adopt' ? 'adopted' : 'found (from an earlier run)'
      logger.info({ event: 'network', link: p.network.link.name, ifindex: network.linkIndex, action: verb, address: `${config.source.address}/${config.source.prefix}`, routes: p.network.routes.length, rules: p.network.rules.length }, `macvlan ${p.network.link.name} ${verb} and configured`)
      readiness.set('network', true)
    },
    stop: async () => {
      if (!cleanOnStop()) return
      const { undone, failed } = await unwindNetwork()
      // The undo stack holds only what this run changed. What an earlier run left (a crash, then this restart
      // found it already in place) is ours too: rules at our priorities, routes in our table, the macvlan with
      // our alias. An adopted link carries no alias and is never deleted.
      const p = plan as Plan | null
      const removed = p === null || nl === null ? [] : await cleanupNetwork(cleanupTargets(p.network), nl)
      logger.info({ event: 'cleanup', what: 'network', undone, removed }, 'network changes removed')
      if (failed.length > 0) throw new Error(`network cleanup: ${failed.map((f) => f.name).join(', ')} failed`)
    }
  })

  if (config.mode === 'init') {
    try {
      await life.start()
    } catch (err) {
      return failed(logger, err)
    }
    rollingBack = false
    // the old router announced at 0 s and again at 2 s before it exited: so do we
    // Its timer is unref()ed so that it never holds a daemon open: awaiting it alone would let the event loop
    // drain and the process exit right here (exit 0, without the announcement or the init-done line).
    const hold = setInterval(() => {}, 60_000)
    let again: Awaited<ApplyNetworkResult['reannounced']> | undefined
    try {
      again = await (network as ApplyNetworkResult | null)?.reannounced
    } finally {
      clearInterval(hold)
    }
    if (again != null && 'error' in again) logger.warn({ err: again.error }, 'second neighbour announcement failed')
    logger.info({ event: 'init-done' }, 'set up; exiting (init mode)')
    ;(nl as Rtnl | null)?.close()
    return 0
  }

  // Kernel-relayed connections (redirect modes; dns-proxy forwards in the kernel). In pod routing the rules outlive
  // the process, and so do the flows. In host routing stop removes the rules: let the flows finish first
  // (see redirect-drain.ts). Not while rolling back a failed start: nothing was relayed yet.
  const drainKernel = async (): Promise<void> => {
    if (rollingBack || config.routing !== 'host' || plan === null || !relaysInKernel(config)) return
    const p = plan as Plan
    await drainRedirect({ family: p.nft.family, table: p.nft.table, nft, logger, timeoutMs: config.drainTimeoutMs })
  }

  let resolver: Resolver | null = null
  if ((config.mode === 'http-proxy' || config.mode === 'dns-proxy') && workers > 1) {
    life.append({
      name: `${workers} workers`,
      start: async () => {
        const { startWorkerPool } = await import('./worker-pool.js')
        const settings = opts.settings
        if (settings === undefined) throw new Error('internal: EGRESS_WORKERS > 1 needs the settings the configuration was parsed from')
        pool = await startWorkerPool({ count: workers, settings, listeners: (plan as Plan).listeners, listenHosts: (plan as Plan).listenHosts, logFormat: opts.logFormat, logger, metrics: metrics as Metrics, readiness })
        const started = pool
        logger.info({ event: 'listening', workers, pids: started.pids() }, `${workers} workers serving`)
        servers = { update: async (_next, settings) => { await started.update(settings) }, close: async (drainMs) => { await started.close(drainMs) } }
      },
      stop: async () => { await Promise.all([servers?.close(config.drainTimeoutMs), drainKernel()]) }
    })
  } else if (config.mode === 'http-proxy' || config.mode === 'dns-proxy') {
    life.append({
      name: 'dns resolver',
      start: async () => {
        // the proxy modes' code is loaded only when a proxy mode runs: redirect mode starts faster without it
        const { openResolver } = await import('./mode-servers.js')
        resolver = await openResolver(config, logger)
      },
      stop: () => { resolver?.close() }
    })
    life.append({
      name: 'listeners',
      start: async () => {
        if (kernelForwarding) {
          // the host names' rules follow their answers from the 'kernel names' step, once the reconciler has the plan
          readiness.set('listeners', true, 'every forward is in the kernel (DNAT rules)')
          return
        }
        const { startModeServers } = await import('./mode-servers.js')
        servers = await startModeServers({ config, listeners: (plan as Plan).listeners, listenHosts: (plan as Plan).listenHosts, resolver: resolver as Resolver, logger, metrics: metrics as Metrics, readiness })
      },
      stop: async () => { await Promise.all([servers?.close(config.drainTimeoutMs), drainKernel()]) }
    })
  } else {
    life.append({
      name: 'listeners',
      start: () => { readiness.set('listeners', true, 'redirect mode has none') },
      stop: drainKernel
    })
  }

  life.append({
    name: 'reconcile',
    start: () => {
      const p = plan as Plan
      ;(reconciler as Reconciler | null)?.attach({ plan: p, nl: nl as Rtnl, metrics: metrics as Metrics })
      ;(reconciler as Reconciler | null)?.start()
      stopGateway = watchGateway({ nl: nl as Rtnl, plan: p, logger, readiness })
    },
    // The reconciler stops before the listeners drain: the drain changes our rules (refuses new connections) and
    // a repair must not undo that.
    stop: async () => {
      (stopGateway as (() => void) | null)?.()
      await (reconciler as Reconciler | null)?.stop()
    }
  })

  // Rule rewrites (a kernel forward's name resolved to new addresses) and reloads, one at a time: each builds its
  // rules from the configuration and the answers current when it runs.
  let rulesChain: Promise<unknown> = Promise.resolve()
  const serially = async <T>(fn: () => Promise<T>): Promise<T> => {
    const run = rulesChain.then(fn)
    rulesChain = run.catch(() => undefined)
    return await run
  }
  let names: KernelNames | null = null
  // the host-name rules last logged, to log only what a rewrite changes
  let nameRules: readonly NatRule[] = []
  const noteNameRules = (resolved: ResolvedNames): void => {
    const rules = (kernelNat(config, resolved)?.rules ?? []).filter((r) => r.name !== null)
    logNameRules(logger, nameRules, rules)
    nameRules = rules
    const missing = [...new Set(rules.filter((r) => r.targets.length === 0).map((r) => r.name as string))]
    readiness.set('names', missing.length === 0, missing.length === 0 ? '' : `no address yet for ${missing.join(', ')}`)
  }
  if (kernelForwarding) {
    let retry: NodeJS.Timeout | null = null
    const rewrite = async (): Promise<void> => {
      const p = plan
      const follow = names
      if (p === null || follow === null || reconciler === null) return
      const resolved = new Map(follow.resolved)
      const next: Plan = { ...p, nft: nftPlan(config, { macvlan: p.network.link.name, resolved }) }
      if (next.nft.script === p.nft.script) return
      try {
        await reconciler.applyRules(next)
        plan = next
        noteNameRules(resolved)
      } catch (err) {
        // the rules applied last stay (the reconciler keeps them); try again soon, the answer may move on meanwhile
        logger.error({ event: 'kernel-forward-failed', err }, `could not rewrite the kernel forwards' rules: ${(err as Error)?.message ?? String(err)}; retrying in 5 s`)
        retry ??= setTimeout(() => { retry = null; void serially(rewrite) }, 5_000)
        retry.unref()
      }
    }
    life.append({
      name: 'kernel names',
      start: async () => {
        const { followKernelNames } = await import('./kernel-names.js')
        names = followKernelNames({ names: kernelNames(config.dnsProxy), resolver: resolver as Resolver, logger: logger.child({ component: 'dns-proxy' }), onChange: () => { void serially(rewrite) } })
        const follow = names
        servers = { update: async (next) => { follow.follow(kernelNames(next.dnsProxy)) }, close: async () => {} }
        noteNameRules(NO_NAMES)
        await serially(rewrite)
      },
      stop: async () => {
        names?.close()
        names = null
        if (retry !== null) clearTimeout(retry)
        await rulesChain
      }
    })
  }

  try {
    await life.start()
  } catch (err) {
    return failed(logger, err)
  }
  rollingBack = false

  return await new Promise<number>((resolve) => {
    const off = onSignals({
      stop: async (signal) => {
        reconciler?.stopping()
        logger.info({ event: 'stop', signal, drainTimeoutMs: config.drainTimeoutMs }, 'stopping: draining connections')
        // Notifications go out one after another (systemd-notify children): STOPPING=1 may still wait
        // behind an earlier one when the drain is over, and the process must not exit before it is sent.
        const stoppingSent = notify(stoppingState())
        readiness.set('stopping', false)
        const { stopped, errors } = await life.stop()
        for (const e of errors) logger.error({ err: e }, e.message)
        await stoppingSent
        logger.info({ event: 'stopped', stopped }, 'stopped')
        off()
        resolve(errors.length === 0 ? 0 : 1)
      },
      reload: async () => {
        void notify(reloadingState())
        try {
          await serially(async () => {
            const resolved = new Map(names?.resolved ?? NO_NAMES)
            const next = await reload(config, opts, { logger, nl: nl as Rtnl, reconciler: reconciler as Reconciler, plan: plan as Plan, servers, resolved })
            if (next === null) return
            plan = next.plan
            config = next.config
            if (kernelForwarding) noteNameRules(resolved)
          })
        } catch (err) {
          // The configuration was valid but applying it failed part-way (nft rejected it, a listener could not
          // open): say so; what was applied stays, the reconciler keeps the rules it last applied.
          logger.error({ event: 'reload-failed', err }, `reload failed: ${(err as Error)?.message ?? String(err)}`)
        } finally {
          void notify(readyState(`serving (${config.modeName})`))
        }
      }
    })
  })
}

/** What a rewrite of the kernel forwards' rules changed for their host names, one line per forward that changed. */
function logNameRules (logger: Logger, before: readonly NatRule[], after: readonly NatRule[]): void {
  const was = new Map(before.map((r) => [r.line, r.targets.map((a) => a.address).join(', ')]))
  for (const r of after) {
    if (r.name === null) continue
    const addresses = r.targets.map((a) => a.address)
    const previous = was.get(r.line)
    if (previous === addresses.join(', ') || (previous === undefined && addresses.length === 0)) continue
    const fields = { event: 'kernel-forward', port: r.port, target: r.name, addresses, targetPort: r.targetPort, line: r.line }
    if (addresses.length === 0) logger.warn(fields, `port ${r.port}: ${r.name} has no usable address now; its DNAT rule is removed and the port refuses connections`)
    else logger.info(fields, `port ${r.port} to ${r.name} (${addresses.join(', ')}):${r.targetPort} in the kernel (DNAT)`)
  }
}

function failed (logger: Logger, err: unknown): number {
  if (err instanceof StartError) {
    logger.error({ event: 'setup-failed', step: err.hook, rolledBack: err.stopped, err: err.cause }, `${err.hook} failed: ${(err.cause as Error)?.message ?? String(err.cause)}; rolled back: ${err.stopped.length > 0 ? err.stopped.join(', ') : 'nothing'}`)
  } else {
    logger.error({ event: 'setup-failed', err }, String(err))
  }
  return 1
}

/**
 * SIGHUP: re-read the `_FILE` configurations. A valid one is applied atomically (one nft transaction,
 * listeners added and removed) without dropping established connections; an invalid one is rejected with the
 * usual error lines and the old one stays.
 */
async function reload (config: Config, opts: DaemonOptions, deps: { logger: Logger, nl: Rtnl, reconciler: Reconciler, plan: Plan, servers: Serving | null, resolved: ResolvedNames }): Promise<{ config: Config, plan: Plan } | null> {
  const { logger, reconciler } = deps
  const loaded = loadConfig(opts.env ?? process.env, opts.flags ?? {})
  if ('issues' in loaded) {
    logger.error({ event: 'reload-rejected', issues: loaded.issues.map(formatIssue) }, 'new configuration rejected; keeping the old one')
    return null
  }
  const next = loaded.config
  const unchanged = ['mode', 'source', 'gateway', 'interface', 'macvlan', 'podInterface', 'routing', 'workers'] as const
  for (const key of unchanged) {
    if (JSON.stringify(next[key]) !== JSON.stringify(config[key])) {
      logger.error({ event: 'reload-rejected', variable: key }, `reload cannot change ${key}; restart the daemon for that. Keeping the old configuration`)
      return null
    }
  }
  const old = deps.plan
  const facts = await gatherFacts(next, deps.nl)
  const fresh = buildPlan(next, { ...facts, macvlanExists: old.network.link.action === 'adopt', parent: old.network.link.parent }, deps.resolved)
  // only the destinations changed: the network stays exactly as set up
  const plan: Plan = { ...fresh, network: old.network }
  const hash = await reconciler.applyRules(plan)
  // Redirect mode only: a dns-proxy forward in the kernel keeps its established connections on reload, as a proxied
  // one does (their conntrack entries hold their DNAT; all of them are TCP, whose flows end on their own).
  if (config.redirect !== null && next.redirect !== null) {
    const deleted = await deleteStaleConntrack(config.redirect, next.redirect, logger)
    logger.info({ event: 'conntrack', deleted }, 'stale conntrack entries deleted')
  }
  await deps.servers?.update(next, loaded.settings)
  logger.info({ event: 'reloaded', hash }, 'configuration reloaded')
  return { config: next, plan }
}
