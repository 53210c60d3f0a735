/**
 * The primary's side of EGRESS_WORKERS > 1 (see worker-protocol.ts): forks the workers with node:cluster,
 * waits until each has its listeners open, replaces one that dies (backing off when they die young), sends
 * a reloaded configuration to all of them, gathers their metrics for /metrics, and on stop asks each to
 * drain and exit (SIGKILL at the drain deadline plus a grace period).
 */
import cluster from 'node:cluster'
import { fileURLToPath } from 'node:url'
import type { Logger } from 'pino'
import type { RawSettings } from '../config/types.js'
import type { Readiness } from '../observe/health.js'
import type { LogFormat } from '../observe/log.js'
import type { Metrics } from '../observe/metrics.js'
import type { ListenerPlan } from '../plan/types.js'
import { fromWorker, HEALTHY_RUN_MS, mergeChecks, restartDelayMs, WORKER_ENV, type Check, type FromWorker, type ToWorker, type WorkerMetrics } from './worker-protocol.js'

/** the worker's entry point (worker-main.ts, next to this file) */
const WORKER_MAIN = fileURLToPath(new URL('./worker-main.js', import.meta.url))

/** How long the pool waits for a worker, in ms. */
export interface PoolTimeouts {
  /** fork → listeners open */
  start: number
  /** a reloaded configuration applied */
  update: number
  /** its metrics for a scrape */
  metrics: number
  /** past the drain deadline, before SIGKILL */
  stopGrace: number
}
const TIMEOUTS: PoolTimeouts = { start: 30_000, update: 15_000, metrics: 3_000, stopGrace: 5_000 }

/** What the pool uses of a node:cluster Worker (a cluster Worker is one; tests hand in their own). */
export interface PoolWorker {
  readonly id: number
  readonly process: { readonly pid?: number, kill: (signal?: NodeJS.Signals) => boolean }
  send: (message: ToWorker) => boolean
  isConnected: () => boolean
  isDead: () => boolean
  on: ((event: 'message', listener: (message: unknown) => void) => unknown) & ((event: 'exit', listener: (code: number | null, signal: NodeJS.Signals | null) => void) => unknown) &
  ((event: 'error', listener: (err: Error) => void) => unknown)
  once: (event: 'exit', listener: () => void) => unknown
}

/** node:cluster's fork of worker-main.ts; SCHED_NONE, set before the first fork */
function clusterFork (): PoolWorker {
  // SCHED_NONE: the primary opens each listening socket once and hands it to every worker, which accepts
  // on it itself. Round-robin would accept every connection in the primary and pass it over IPC.
  cluster.schedulingPolicy = cluster.SCHED_NONE
  cluster.setupPrimary({ exec: WORKER_MAIN, args: ['run'] })
  return cluster.fork({ [WORKER_ENV]: '1' }) as unknown as PoolWorker
}

export interface WorkerPool {
  /** pids of the workers now, for logs and tests */
  pids (): number[]
  /** Sends a reloaded configuration to every running worker; rejects naming the workers that failed it. */
  update (settings: RawSettings): Promise<void>
  /** Every running worker's metrics (a worker that does not answer in time is left out of this scrape). */
  metrics (): Promise<WorkerMetrics[]>
  /** Asks every worker to drain and exit; resolves when all have exited. */
  close (drainMs: number): Promise<void>
}

interface Slot {
  worker: PoolWorker
  running: boolean
  startedAt: number
  /** the settings it was started with: a reload while it was starting sends it the newer ones */
  settings: RawSettings | null
  checks: Map<string, Check>
}

export interface WorkerPoolOptions {
  count: number
  settings: RawSettings
  listeners: readonly ListenerPlan[]
  listenHosts: readonly string[]
  logFormat?: LogFormat
  logger: Logger
  metrics: Metrics
  readiness: Readiness
  /** for tests: the worker processes and the waits (default node:cluster, TIMEOUTS) */
  fork?: () => PoolWorker
  timeouts?: Partial<PoolTimeouts>
}

/** Forks `count` workers; resolves once every one has its listeners open, rejects (all stopped) when one fails. */
export async function startWorkerPool (opts: WorkerPoolOptions): Promise<WorkerPool> {
  const { count, listeners, logger, metrics, readiness } = opts
  let settings = opts.settings
  const fork = opts.fork ?? clusterFork
  const timeouts: PoolTimeouts = { ...TIMEOUTS, ...opts.timeouts }

  const slots = new Map<number, Slot>()
  const timers = new Set<NodeJS.Timeout>()
  /** requests in flight, by `kind:id`: told each worker's answer, or null when that worker exited */
  const waiting = new Map<string, (worker: number, answer: FromWorker | null) => void>()
  let closing = false
  /** the first `count` have started: from here on a worker that exits is replaced */
  let serving = false
  let quickDeaths = 0
  let nextRequest = 0

  const publish = (): void => {
    const merged = mergeChecks([...slots.values()].map((s) => ({ id: s.worker.id, running: s.running, checks: s.checks })), count)
    for (const [name, c] of merged) readiness.set(name, c.ok, c.detail)
    const runningNow = [...slots.values()].filter((s) => s.running).length
    metrics.workers.set({ state: 'running' }, runningNow)
    metrics.workers.set({ state: 'starting' }, slots.size - runningNow)
  }

  const send = (slot: Slot, message: ToWorker): boolean => {
    if (!slot.worker.isConnected()) return false
    try {
      slot.worker.send(message)
      return true
    } catch {
      return false
    }
  }

  /** Forks one worker; resolves when it has started, rejects with its reason when it fails or dies first. */
  const spawn = async (): Promise<void> => {
    const worker = fork()
    const slot: Slot = { worker, running: false, startedAt: Date.now(), settings: null, checks: new Map() }
    slots.set(worker.id, slot)
    publish()
    return await new Promise<void>((resolve, reject) => {
      let settled = false
      const settle = (err: Error | null): void => {
        if (settled) return
        settled = true
        clearTimeout(deadline)
        if (err === null) resolve(); else reject(err)
      }
      const deadline = setTimeout(() => {
        settle(new Error(`worker ${worker.id} did not open its listeners within ${timeouts.start / 1000} s`))
        worker.process.kill('SIGKILL')
      }, timeouts.start)
      // A message written to a worker that is exiting (a terminal's Ctrl-C, or a signal to the whole process
      // group, reaches it at the same moment as the primary) fails with EPIPE, which node reports as the worker's
      // 'error' event: with no listener that would end the primary before its drain. Its 'exit' follows.
      worker.on('error', (err: Error) => {
        logger.debug({ event: 'worker-channel-error', worker: worker.id, err }, `worker ${worker.id}: ${err.message}`)
      })
      worker.on('message', (raw: unknown) => {
        const m = fromWorker(raw)
        if (m === null) return
        if (m.t === 'hello') {
          // a stop sent before its entry module had loaded was lost: it is told again now
          if (closing) { send(slot, { t: 'stop', drainMs: 0 }); return }
          slot.settings = settings
          send(slot, { t: 'start', settings, listeners, listenHosts: opts.listenHosts, logFormat: opts.logFormat })
        } else if (m.t === 'started') {
          slot.running = true
          slot.startedAt = Date.now()
          logger.info({ event: 'worker-started', worker: worker.id, pid: worker.process.pid }, `worker ${worker.id} (pid ${String(worker.process.pid)}) serving`)
          publish()
          settle(null)
          // a SIGHUP came while it was starting: it runs the configuration before that one
          if (slot.settings !== settings) {
            slot.settings = settings
            send(slot, { t: 'update', id: -1, settings })
          }
        } else if (m.t === 'start-failed') {
          settle(new Error(`worker ${worker.id}: ${m.message}`))
        } else if (m.t === 'check') {
          slot.checks.set(m.name, { ok: m.ok, detail: m.detail })
          publish()
        } else if (m.t === 'updated' && m.id === -1) {
          if (m.error !== null) logger.error({ event: 'reload-failed', worker: worker.id, err: m.error }, `worker ${worker.id} could not apply the configuration reloaded while it started: ${m.error}`)
        } else {
          waiting.get(`${m.t}:${m.id}`)?.(worker.id, m)
        }
      })
      worker.on('exit', (code, signal) => {
        slots.delete(worker.id)
        for (const answer of [...waiting.values()]) answer(worker.id, null)
        publish()
        const how = signal !== null ? `signal ${signal}` : `code ${String(code)}`
        settle(new Error(`worker ${worker.id} exited (${how}) before its listeners were open`))
        if (closing || !serving) return
        // A worker died (serving: its connections are gone with it; the others go on accepting) or a
        // replacement failed to start: start another, later each time they die young.
        const young = Date.now() - slot.startedAt < HEALTHY_RUN_MS
        quickDeaths = young ? quickDeaths + 1 : 0
        const delay = restartDelayMs(quickDeaths)
        metrics.workerRestarts.inc()
        logger.error({ event: 'worker-exit', worker: worker.id, pid: worker.process.pid, code, signal, restartInMs: delay }, `worker ${worker.id} (pid ${String(worker.process.pid)}) exited (${how}); starting another in ${delay} ms`)
        const timer = setTimeout(() => {
          timers.delete(timer)
          if (closing) return
          // a replacement that fails to start exits, and that exit schedules the next attempt
          spawn().catch((err: Error) => {
            logger.error({ event: 'worker-start-failed', err }, err.message)
          })
        }, delay)
        timers.add(timer)
      })
    })
  }

  /** One request to every running worker; each one's answer, or null (not sent, no answer in time, or it exited). */
  const request = async (kind: 'updated' | 'metrics', make: (id: number) => ToWorker, timeoutMs: number): Promise<Array<{ worker: number, answer: FromWorker | null }>> => {
    const id = nextRequest++
    const key = `${kind}:${id}`
    const targets = [...slots.values()].filter((s) => s.running)
    const answers = new Map<number, FromWorker | null>()
    const pending = new Set<number>()
    for (const s of targets) if (send(s, make(id))) pending.add(s.worker.id)
    if (pending.size > 0) {
      await new Promise<void>((resolve) => {
        const done = (): void => { clearTimeout(timer); waiting.delete(key); resolve() }
        const timer = setTimeout(done, timeoutMs)
        waiting.set(key, (worker, answer) => {
          if (!pending.delete(worker)) return
          answers.set(worker, answer)
          if (pending.size === 0) done()
        })
      })
    }
    return targets.map((s) => ({ worker: s.worker.id, answer: answers.get(s.worker.id) ?? null }))
  }

  try {
    await Promise.all(Array.from({ length: count }, async () => await spawn()))
  } catch (err) {
    closing = true
    await stopAll(slots, 0, timeouts.stopGrace)
    throw err
  }
  serving = true

  return {
    pids: () => [...slots.values()].map((s) => s.worker.process.pid ?? 0),
    update: async (next) => {
      settings = next
      const answers = await request('updated', (id) => ({ t: 'update', id, settings: next }), timeouts.update)
      const failed = answers.filter((a) => a.answer === null || (a.answer.t === 'updated' && a.answer.error !== null))
      if (failed.length > 0) {
        throw new Error(failed.map((a) => `worker ${a.worker}: ${a.answer === null ? 'no answer' : (a.answer as { error: string }).error}`).join('; '))
      }
    },
    metrics: async () => {
      const answers = await request('metrics', (id) => ({ t: 'metrics', id }), timeouts.metrics)
      return answers.flatMap((a) => a.answer?.t === 'metrics' ? [a.answer.metrics] : [])
    },
    close: async (drainMs) => {
      closing = true
      for (const t of timers) clearTimeout(t)
      timers.clear()
      await stopAll(slots, drainMs, timeouts.stopGrace)
    }
  }
}

async function stopAll (slots: ReadonlyMap<number, Slot>, drainMs: number, graceMs: number): Promise<void> {
  const all = [...slots.values()]
  await Promise.all(all.map(async (s) => {
    const w = s.worker
    if (w.isDead()) return
    await new Promise<void>((resolve) => {
      const kill = setTimeout(() => { w.process.kill('SIGKILL') }, drainMs + graceMs)
      w.once('exit', () => { clearTimeout(kill); resolve() })
      try {
        if (!w.isConnected() || !w.send({ t: 'stop', drainMs })) w.process.kill('SIGTERM')
      } catch {
        w.process.kill('SIGTERM')
      }
    })
  }))
}
