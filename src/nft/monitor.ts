/**
 * Ruleset change events, from one long-running `nft monitor` child: the reconcile loop checks our table when the
 * kernel says something changed, instead of forking `nft -j list table` every second. Every line nft prints is a
 * change (ours included: a check then finds nothing to do). If the child dies it is restarted with backoff, and
 * the caller is told (`onChange`) so a change during the gap is not missed.
 */
import { spawn, type ChildProcess } from 'node:child_process'
import { createInterface } from 'node:readline'
import { onPath } from '../on-path.js'

export interface NftMonitorOptions {
  /** called (debounced) after the ruleset changed; also after the monitor (re)started */
  onChange: () => void
  /** the monitor child failed to start or died; it is restarted */
  onError?: (err: Error) => void
  binary?: string
  /** e.g. ['ip', 'netns', 'exec', NS] for tests */
  prefix?: readonly string[]
  /** events closer together than this make one onChange; default 50 ms */
  debounceMs?: number
  /**
   * Run the child under `setpriv --pdeathsig TERM` (util-linux, in every Debian) when it is on PATH, so that it dies
   * with the daemon even when the daemon is SIGKILLed (otherwise it would linger until its next write fails), and
   * in a process group of its own. Default true.
   */
  dieWithParent?: boolean
}

export interface NftMonitor {
  stop (): void
  /** events seen so far (for tests and metrics) */
  events (): number
}

const MAX_BACKOFF_MS = 30_000

export function startNftMonitor (opts: NftMonitorOptions): NftMonitor {
  const binary = opts.binary ?? 'nft'
  const setpriv = opts.dieWithParent === false ? null : onPath('setpriv')
  const prefix = [...(opts.prefix ?? []), ...(setpriv === null ? [] : [setpriv, '--pdeathsig', 'TERM'])]
  const debounceMs = opts.debounceMs ?? 50
  let child: ChildProcess | null = null
  let stopped = false
  let events = 0
  let debounce: NodeJS.Timeout | null = null
  let restart: NodeJS.Timeout | null = null
  let backoff = 500

  const changed = (): void => {
    if (stopped || debounce !== null) return
    debounce = setTimeout(() => {
      debounce = null
      if (!stopped) opts.onChange()
    }, debounceMs)
    debounce.unref()
  }

  const launch = (): void => {
    if (stopped) return
    const argv = [...prefix, binary, 'monitor']
    // With pdeathsig it dies with us anyway, so it gets its own process group: a signal meant for the daemon's
    // group (Ctrl-C, `kill -TERM -PGID`) would otherwise kill it first, and its death would read as a failure.
    const c = spawn(argv[0] as string, argv.slice(1), { stdio: ['ignore', 'pipe', 'pipe'], detached: setpriv !== null })
    child = c
    let stderr = ''
    c.stderr?.on('data', (b: Buffer) => { stderr = (stderr + b.toString()).slice(-2000) })
    createInterface({ input: c.stdout as NodeJS.ReadableStream }).on('line', () => {
      events++
      backoff = 500
      changed()
    })
    c.once('spawn', () => { changed() })
    c.once('error', (err) => { opts.onError?.(err) })
    c.once('close', (code, signal) => {
      child = null
      if (stopped) return
      opts.onError?.(new Error(`nft monitor exited (${code ?? signal ?? '?'})${stderr.trim() === '' ? '' : `: ${stderr.trim()}`}; restarting in ${backoff} ms`))
      restart = setTimeout(launch, backoff)
      restart.unref()
      backoff = Math.min(backoff * 2, MAX_BACKOFF_MS)
    })
    // the monitor never holds the process open: the daemon's listeners and timers decide that
    c.unref()
    ;(c.stdout as unknown as { unref?: () => void } | null)?.unref?.()
    ;(c.stderr as unknown as { unref?: () => void } | null)?.unref?.()
  }

  launch()
  return {
    stop () {
      stopped = true
      if (debounce !== null) clearTimeout(debounce)
      if (restart !== null) clearTimeout(restart)
      child?.kill('SIGTERM')
      child = null
    },
    events: () => events
  }
}
