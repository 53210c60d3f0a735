/**
 * A worker of EGRESS_WORKERS > 1 (forked by worker-pool.ts; the protocol is in worker-protocol.ts): the
 * mode's listeners and relays, nothing else. It parses the settings the primary sends (the same text the
 * primary validated), opens the listeners on the sockets the primary shares, and reports readiness checks,
 * reload results and metrics. It drains and exits on the primary's stop and on SIGTERM/SIGINT (a terminal's
 * Ctrl-C reaches the whole process group). When the primary is gone (the IPC channel closes without a stop),
 * node:cluster exits the worker at once: nobody would keep the rules true any more. SIGHUP is the primary's:
 * a worker ignores it.
 */
import cluster from 'node:cluster'
import type { Logger } from 'pino'
import { parseConfig } from '../config/config.js'
import type { RawSettings } from '../config/types.js'
import { formatIssue } from '../errors.js'
import { Readiness } from '../observe/health.js'
import { createLogger } from '../observe/log.js'
import { createMetrics } from '../observe/metrics.js'
import { runMirrors } from '../observe/mirrors.js'
import type { Resolver } from '../dns/resolver.js'
import { openResolver, startModeServers, type ModeServers } from './mode-servers.js'
import type { FromWorker, ToWorker } from './worker-protocol.js'
import { capYoungGeneration } from './young-generation.js'

const id = cluster.worker?.id ?? 0

function tell (message: FromWorker, sent?: () => void): void {
  if (process.connected && process.send !== undefined) process.send(message, undefined, {}, () => sent?.())
  else sent?.()
}

/** Readiness checks go to the primary (each change once), which merges every worker's into its /readyz. */
class ReportedReadiness extends Readiness {
  readonly #sent = new Map<string, string>()
  override set (name: string, ok: boolean, detail = ''): void {
    super.set(name, ok, detail)
    const key = `${String(ok)} ${detail}`
    if (this.#sent.get(name) === key) return
    this.#sent.set(name, key)
    tell({ t: 'check', name, ok, detail })
  }
}

let logger: Logger | null = null
let servers: ModeServers | null = null
let resolver: Resolver | null = null
let drainMs = 25_000
let stopping: Promise<void> | null = null
const metrics = createMetrics()

async function start (m: Extract<ToWorker, { t: 'start' }>): Promise<void> {
  const parsed = parseConfig(m.settings)
  if (!parsed.ok) throw new Error(`the settings do not parse: ${parsed.issues.map(formatIssue).join('; ')}`)
  const config = parsed.config
  drainMs = config.drainTimeoutMs
  logger = createLogger({ level: config.logLevel, format: m.logFormat }).child({ worker: id })
  capYoungGeneration()
  resolver = await openResolver(config, logger)
  servers = await startModeServers({ config, listeners: m.listeners, listenHosts: m.listenHosts, resolver, logger, metrics, readiness: new ReportedReadiness() })
}

async function update (settings: RawSettings): Promise<string | null> {
  const parsed = parseConfig(settings)
  if (!parsed.ok) return `the settings do not parse: ${parsed.issues.map(formatIssue).join('; ')}`
  try {
    await servers?.update(parsed.config)
    return null
  } catch (err) {
    return (err as Error)?.message ?? String(err)
  }
}

async function stop (ms: number, why: string): Promise<void> {
  stopping ??= (async () => {
    logger?.info({ event: 'worker-stop', why, drainTimeoutMs: ms }, `worker ${id} stopping (${why}): draining connections`)
    try {
      await servers?.close(ms)
    } catch (err) {
      logger?.error({ err }, `worker ${id}: ${(err as Error)?.message ?? String(err)}`)
    }
    resolver?.close()
    process.exit(0)
  })()
  await stopping
}

process.on('message', (raw: ToWorker) => {
  if (typeof raw !== 'object' || raw === null) return
  if (raw.t === 'start') {
    start(raw).then(() => { tell({ t: 'started' }) }, (err: Error) => {
      tell({ t: 'start-failed', message: err?.message ?? String(err) }, () => process.exit(1))
    })
  } else if (raw.t === 'update') {
    void update(raw.settings).then((error) => { tell({ t: 'updated', id: raw.id, error }) })
  } else if (raw.t === 'metrics') {
    runMirrors(metrics.beforeScrape)
    metrics.registry.getMetricsAsJSON().then((m) => { tell({ t: 'metrics', id: raw.id, metrics: m }) }, () => { tell({ t: 'metrics', id: raw.id, metrics: [] }) })
  } else if (raw.t === 'stop') {
    void stop(raw.drainMs, 'asked by the primary')
  }
})
process.on('SIGTERM', () => { void stop(drainMs, 'SIGTERM') })
process.on('SIGINT', () => { void stop(drainMs, 'SIGINT') })
process.on('SIGHUP', () => { /* the primary reloads and tells the workers */ })
tell({ t: 'hello' })
