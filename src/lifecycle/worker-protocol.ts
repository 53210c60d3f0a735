/**
 * EGRESS_WORKERS > 1: what the primary and its workers say to each other over the cluster IPC channel, and
 * the pure decisions about them (one readiness out of many workers', when to restart one that died).
 *
 * The primary owns everything that is set up once: the macvlan, the nft rules, the reconciler, the health
 * listener and the signals. A worker owns listeners and relays: it gets the raw settings (the `_FILE`
 * contents inlined, so every process parses the very same text) and the planned listeners, opens the mode's
 * servers on listening sockets the primary shares with every worker (cluster's SCHED_NONE: the kernel hands
 * each connection to one accepting worker), and reports its readiness checks and, when asked, its metrics.
 */
import type { MetricObjectWithValues, MetricValue } from 'prom-client'
import type { LogFormat } from '../observe/log.js'
import type { RawSettings } from '../config/types.js'
import type { ListenerPlan } from '../plan/types.js'

export type Check = { readonly ok: boolean, readonly detail: string }
export type WorkerMetrics = Array<MetricObjectWithValues<MetricValue<string>>>

/** primary → worker */
export type ToWorker =
  | { readonly t: 'start', readonly settings: RawSettings, readonly listeners: readonly ListenerPlan[], readonly listenHosts: readonly string[], readonly logFormat?: LogFormat }
  | { readonly t: 'update', readonly id: number, readonly settings: RawSettings }
  | { readonly t: 'metrics', readonly id: number }
  | { readonly t: 'stop', readonly drainMs: number }

/** worker → primary */
export type FromWorker =
  /** listening for the primary's messages: cluster's 'online' comes before the entry module has loaded */
  | { readonly t: 'hello' }
  | { readonly t: 'started' }
  | { readonly t: 'start-failed', readonly message: string }
  | { readonly t: 'check', readonly name: string, readonly ok: boolean, readonly detail: string }
  | { readonly t: 'updated', readonly id: number, readonly error: string | null }
  | { readonly t: 'metrics', readonly id: number, readonly metrics: WorkerMetrics }

/** The environment variable that tells the entry point it runs as a worker (set by the primary's fork). */
export const WORKER_ENV = 'EGRESS_ROUTER_WORKER'

const MESSAGE_TYPES = new Set(['hello', 'started', 'start-failed', 'check', 'updated', 'metrics'])

/** A message from a worker, or null for anything else on the channel (prom-client's, node's own). */
export function fromWorker (message: unknown): FromWorker | null {
  if (typeof message !== 'object' || message === null) return null
  const t = (message as { t?: unknown }).t
  return typeof t === 'string' && MESSAGE_TYPES.has(t) ? message as FromWorker : null
}

/**
 * The primary's readiness from its running workers' checks. A check is ok when every running worker that
 * reports it says ok (a forward whose name one worker cannot resolve fails on that worker's connections);
 * its detail is the first failing worker's, named. `listeners` is ok while at least one worker runs (a
 * running worker has said it has its listeners open): the shared listening sockets stay open and a worker
 * that died is being replaced, so the router still serves.
 */
export function mergeChecks (workers: ReadonlyArray<{ readonly id: number, readonly running: boolean, readonly checks: ReadonlyMap<string, Check> }>, configured: number): Map<string, Check> {
  const running = workers.filter((w) => w.running)
  const out = new Map<string, Check>()
  for (const w of running) {
    for (const [name, c] of w.checks) {
      if (name === 'listeners') continue
      const seen = out.get(name)
      if (seen === undefined || (seen.ok && !c.ok)) out.set(name, c.ok ? c : { ok: false, detail: `worker ${w.id}: ${c.detail}` })
    }
  }
  const listening = running.length
  out.set('listeners', listening === 0
    ? { ok: false, detail: `no worker is serving (0 of ${configured})` }
    : { ok: true, detail: listening < configured ? `${listening} of ${configured} workers serving` : '' })
  return out
}

/** A worker that ran at least this long before it died counts as healthy: its replacement starts at once. */
export const HEALTHY_RUN_MS = 10_000
const FIRST_RESTART_MS = 100
const MAX_RESTART_MS = 10_000

/**
 * How long to wait before replacing a worker that died, given how many died in a row within HEALTHY_RUN_MS
 * of their start (1 for the first such death). A crash loop backs off to one attempt per 10 s.
 */
export function restartDelayMs (quickDeathsInRow: number): number {
  if (quickDeathsInRow <= 0) return 0
  return Math.min(MAX_RESTART_MS, FIRST_RESTART_MS * 2 ** (quickDeathsInRow - 1))
}
