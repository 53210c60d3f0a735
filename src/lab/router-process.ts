/**
 * The real daemon as a child process inside the topology's router namespace: `ip netns exec ROUTER node
 * bin/egress-router run`, its JSON log lines parsed as they come, and helpers to wait for one of them.
 * Shared by `egress-router lab` and the end-to-end tests.
 */
import type { ChildProcess } from 'node:child_process'
import { readFileSync } from 'node:fs'
import { dirname, join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { createInterface } from 'node:readline'
import { killGroup, waitForExit } from './exec.js'
import type { NsRole, Topology } from './topology.js'
import { waitFor } from './wait.js'

/**
 * bin/egress-router of this checkout: the nearest directory above this file (dist/src/lab/, dist/bundle/, or src/lab/
 * when the tests load it as TypeScript) whose package.json is egress-router's. Found by walking up, not by a fixed
 * number of `../`: a guess one level too high would run whatever bin/egress-router sits beside the checkout.
 */
export const ROUTER_BIN = join(packageRoot(fileURLToPath(new URL('.', import.meta.url))), 'bin', 'egress-router')

function packageRoot (from: string): string {
  for (let dir = from; ; dir = dirname(dir)) {
    try {
      const pkg = JSON.parse(readFileSync(join(dir, 'package.json'), 'utf8')) as { name?: unknown }
      if (pkg.name === 'egress-router') return dir
    } catch { /* no package.json here */ }
    // not in a checkout or an image of ours: two levels up, where src/lab/ and dist/bundle/ have it
    if (dirname(dir) === dir) return join(from, '..', '..')
  }
}

export type LogLine = Record<string, unknown> & { msg?: string, level?: number, event?: string }

export interface RouterProcess {
  readonly child: ChildProcess
  /** every JSON line logged so far */
  readonly logs: LogLine[]
  /** stderr text so far */
  stderr (): string
  /** resolves with the first log line (past or future) that matches */
  waitForLog (match: (l: LogLine) => boolean, what: string, timeoutMs?: number): Promise<LogLine>
  /** waits for `readiness: ready` (the same moment /readyz turns 200) */
  waitReady (timeoutMs?: number): Promise<void>
  /** resolves with how the process ended */
  readonly exited: Promise<{ code: number | null, signal: NodeJS.Signals | null }>
  /** sends a signal (default SIGTERM) and waits for the exit (SIGKILL after timeoutMs) */
  stop (signal?: NodeJS.Signals, timeoutMs?: number): Promise<{ code: number | null, signal: NodeJS.Signals | null }>
}

export interface StartRouterOptions {
  /** the subcommand and its flags; default `run` */
  args?: string[]
  /** the namespace to run in; default the router's */
  role?: NsRole
  /** a command the daemon runs under, e.g. `setpriv …` to drop to a user with the systemd unit's capabilities */
  wrap?: readonly string[]
  /** flags for node itself, before the daemon's script (`--require F`, `--cpu-prof`) */
  nodeArgs?: readonly string[]
}

export function startRouter (topo: Topology, env: Record<string, string>, opts: StartRouterOptions = {}): RouterProcess {
  // `env -u NODE_OPTIONS`: the daemon starts as in a pod or a unit. A test runner that instruments its children
  // (tap adds its hooks to NODE_OPTIONS at every spawn, whatever env is passed) would otherwise load into the
  // daemon and more than double its start-up time.
  const argv = [...(opts.wrap ?? []), 'env', '-u', 'NODE_OPTIONS', process.execPath, ...(opts.nodeArgs ?? []), ROUTER_BIN, ...(opts.args ?? ['run'])]
  const child = topo.spawn(opts.role ?? 'router', argv, {
    env: { PATH: process.env.PATH ?? '/usr/sbin:/usr/bin:/sbin:/bin', ...env },
    stdio: ['ignore', 'pipe', 'pipe']
  })
  const logs: LogLine[] = []
  let stderr = ''
  const waiters = new Set<() => void>()
  const exited = new Promise<{ code: number | null, signal: NodeJS.Signals | null }>((resolve) => {
    child.once('close', (code, signal) => {
      resolve({ code, signal })
      for (const w of waiters) w()
    })
  })
  if (child.stdout !== null) {
    createInterface({ input: child.stdout }).on('line', (line) => {
      try {
        logs.push(JSON.parse(line) as LogLine)
      } catch {
        logs.push({ msg: line, raw: true })
      }
      for (const w of waiters) w()
    })
  }
  child.stderr?.on('data', (b: Buffer) => { stderr += b.toString() })

  // waitFor treats a throw as "not yet": an exit is reported as a value, so the wait ends at once.
  const gone = Symbol('exited')
  const waitForLog = async (match: (l: LogLine) => boolean, what: string, timeoutMs = 15_000): Promise<LogLine> => {
    const found = await waitFor((): LogLine | typeof gone | undefined => {
      const line = logs.find(match)
      if (line !== undefined) return line
      if (child.exitCode !== null || child.signalCode !== null) return gone
      return undefined
    }, { what, timeoutMs, intervalMs: 20 })
    if (found === gone) {
      // the last lines may still be in the pipe when the exit is seen: wait for the streams to close
      await exited
      const line = logs.find(match)
      if (line !== undefined) return line
      throw new Error(`egress-router exited (${String(child.exitCode ?? child.signalCode)}) before ${what}; stderr: ${stderr.trim()}; last log: ${JSON.stringify(logs.slice(-3))}`)
    }
    return found
  }

  return {
    child,
    logs,
    stderr: () => stderr,
    waitForLog,
    waitReady: async (timeoutMs = 20_000) => {
      await waitForLog((l) => l.event === 'readiness' && l.ready === true, 'the router to be ready', timeoutMs)
    },
    exited,
    stop: async (signal = 'SIGTERM', timeoutMs = 30_000) => {
      killGroup(child, signal)
      if (!await waitForExit(child, timeoutMs)) killGroup(child, 'SIGKILL')
      return await exited
    }
  }
}
