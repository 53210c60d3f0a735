/**
 * systemd readiness notifications (sd_notify(3)) for Type=notify units, without native code.
 *
 * The protocol is one AF_UNIX SOCK_DGRAM datagram of `KEY=VALUE` lines sent to $NOTIFY_SOCKET (a path,
 * or `@name` for the abstract namespace). Node cannot open such a socket: `dgram` knows only udp4/udp6,
 * `net` only SOCK_STREAM (connecting to a datagram socket fails with EPROTOTYPE), and there is no FFI in
 * Node 20. The choices were:
 *   - spawn `systemd-notify KEY=VALUE…` (chosen). It ships with systemd itself, so it is present wherever
 *     a service manager set NOTIFY_SOCKET; it handles paths and `@abstract` names; and since systemd 246
 *     it waits on a notification barrier (BARRIER=1 + a pipe fd) until PID 1 has processed the message.
 *     That barrier closes the classic race in which the short-lived sender exits before PID 1 looked up
 *     its cgroup and the message was dropped. Costs: one short child process per notification (a few a
 *     minute at most, with a watchdog), and the unit needs `NotifyAccess=all`, because the datagram comes
 *     from the child's PID, not the main PID (sending the parent's credentials would need CAP_SYS_ADMIN,
 *     which the unit does not grant). A NOTIFY_SOCKET without a `systemd-notify` beside it (podman
 *     --sdnotify=container into this image) is reported as a failure, not silently ignored.
 *   - `socat` or `python3` as the sender: the same child-process cost plus a runtime dependency that
 *     a systemd host does not have by default, and no barrier. Rejected.
 *   - a native addon (unix-dgram and friends): a compiler or prebuilds for one syscall. Rejected.
 *
 * Callers fire and forget (`void notify(...)`), so a delivery failure never rejects: it resolves false
 * and goes to `onError`, or, without one, to a single process warning (stderr), so that an unhandled
 * rejection cannot take the daemon down over a status message.
 *
 * Messages are sent one after another in call order (a queue), so READY=1 cannot overtake the
 * STATUS= sent just before it. Values are single-line: a newline would start a new assignment.
 */
import { spawn } from 'node:child_process'
import { EgressError } from '../errors.js'

export interface NotifyOptions {
  /** where NOTIFY_SOCKET and WATCHDOG_* are read; default process.env */
  readonly env?: Readonly<Record<string, string | undefined>>
  /** the sender program; default `systemd-notify` from PATH */
  readonly command?: string
  /** kill the sender after this long (it waits up to 5 s on the barrier itself); default 10 s */
  readonly timeoutMs?: number
  /** receives delivery failures (EgressError `ERR_SD_NOTIFY`); default: one process warning per process */
  readonly onError?: (err: Error) => void
}

const KEY = /^[A-Z][A-Z0-9_]*$/

/** Queue tail: every notification starts after the previous one has finished, failed or not. */
let tail: Promise<unknown> = Promise.resolve()
let warned = false

function warnOnce (err: Error): void {
  if (warned) return
  warned = true
  process.emitWarning(`${err.message} (further sd_notify failures are not reported)`, { code: 'ERR_SD_NOTIFY' })
}

/**
 * Sends `state` (e.g. `{ READY: '1', STATUS: 'serving' }`) to the service manager as one datagram,
 * `READY=1\nSTATUS=serving`, in the object's key order. Resolves false without doing anything when
 * NOTIFY_SOCKET is not set (not started by a service manager), true once the message was delivered
 * (the barrier confirmed PID 1 processed it). When NOTIFY_SOCKET is set but delivery failed (no
 * `systemd-notify`, nobody listening, timed out) it resolves false and hands an EgressError
 * `ERR_SD_NOTIFY` (cause attached) to onError. Only a malformed key, a programming error, rejects
 * (TypeError), before anything is sent.
 */
export async function notify (state: Record<string, string>, options: NotifyOptions = {}): Promise<boolean> {
  const env = options.env ?? process.env
  const socket = env.NOTIFY_SOCKET
  if (socket === undefined || socket === '') return false
  const assignments = toAssignments(state)
  if (assignments.length === 0) return false
  const run = tail.then(() => send(assignments, socket, options))
  tail = run.catch(() => undefined)
  try {
    return await run
  } catch (err) {
    const error = err instanceof Error ? err : new Error(String(err))
    ;(options.onError ?? warnOnce)(error)
    return false
  }
}

/** `KEY=VALUE` arguments; newlines in values become spaces so one value cannot forge another key. */
export function toAssignments (state: Record<string, string>): string[] {
  return Object.entries(state).map(([key, value]) => {
    if (!KEY.test(key)) throw new TypeError(`sd_notify key must match ${String(KEY)}: '${key}'`)
    return `${key}=${String(value).replace(/[\r\n]+/g, ' ')}`
  })
}

function send (assignments: string[], socket: string, options: NotifyOptions): Promise<boolean> {
  const command = options.command ?? 'systemd-notify'
  const timeoutMs = options.timeoutMs ?? 10_000
  return new Promise((resolve, reject) => {
    let timer: NodeJS.Timeout | undefined
    let settled = false
    const finish = (err: EgressError | null): void => {
      if (settled) return
      settled = true
      clearTimeout(timer)
      if (err === null) resolve(true); else reject(err)
    }
    const fail = (message: string, cause?: unknown): void => {
      finish(new EgressError('ERR_SD_NOTIFY', `sd_notify to ${socket} (${assignments.join(' ')}): ${message}`, { cause }))
    }
    // `--` ends option parsing: nothing after it can be taken for a flag of systemd-notify.
    const child = spawn(command, ['--', ...assignments], {
      env: { ...(options.env ?? process.env), NOTIFY_SOCKET: socket },
      stdio: ['ignore', 'ignore', 'pipe']
    })
    // Our own timer rather than spawn's `timeout`: that one is not cleared when the spawn itself fails
    // and would hold the process open. unref(): a hung sender must not keep the daemon alive.
    timer = setTimeout(() => {
      child.kill('SIGKILL')
      fail(`${command} did not finish within ${timeoutMs} ms`)
    }, timeoutMs)
    timer.unref()
    let stderr = ''
    child.stderr?.setEncoding('utf8')
    child.stderr?.on('data', (chunk: string) => { if (stderr.length < 4096) stderr += chunk })
    child.once('error', (err) => { fail(`cannot run ${command}: ${err.message}`, err) })
    child.once('close', (code, signal) => {
      if (code === 0) { finish(null); return }
      const why = signal !== null ? `killed by ${signal}` : `exit code ${String(code)}`
      fail(`${command} failed (${why})${stderr.trim() === '' ? '' : `: ${stderr.trim()}`}`)
    })
  })
}

/** Monotonic clock in microseconds, as MONOTONIC_USEC wants (libuv's hrtime is CLOCK_MONOTONIC). */
export function monotonicUsec (): string {
  return (process.hrtime.bigint() / 1000n).toString()
}

/** Set-up done: rules in place, listeners open. */
export function readyState (status: string): Record<string, string> {
  return { READY: '1', STATUS: status }
}

/** SIGHUP received: RELOADING=1 with the timestamp Type=notify-reload (systemd 253+) requires; send readyState after. */
export function reloadingState (status = 'reloading configuration'): Record<string, string> {
  return { RELOADING: '1', STATUS: status, MONOTONIC_USEC: monotonicUsec() }
}

/** SIGTERM received: draining. */
export function stoppingState (status = 'draining connections'): Record<string, string> {
  return { STOPPING: '1', STATUS: status }
}

/**
 * The interval at which to send WATCHDOG=1, or null when the unit set no WatchdogSec= (or set it for
 * another PID). Half the timeout, as sd_watchdog_enabled(3) recommends.
 */
export function watchdogIntervalMs (env: Readonly<Record<string, string | undefined>> = process.env, pid = process.pid): number | null {
  const usec = Number(env.WATCHDOG_USEC ?? '')
  if (!Number.isSafeInteger(usec) || usec <= 0) return null
  const forPid = env.WATCHDOG_PID
  if (forPid !== undefined && forPid !== '' && Number(forPid) !== pid) return null
  return Math.max(1, Math.floor(usec / 2000))
}

/**
 * Pings WATCHDOG=1 every watchdogIntervalMs() while the event loop turns (a stuck loop stops the pings
 * and systemd restarts the service). Returns the stop function; a no-op when no watchdog is configured.
 * Ping failures go to onError; the timer is unref()ed so it never holds the process open.
 */
export function startWatchdog (onError: (err: Error) => void, options: NotifyOptions = {}): () => void {
  const interval = watchdogIntervalMs(options.env ?? process.env)
  if (interval === null) return () => {}
  let inFlight = false
  const timer = setInterval(() => {
    if (inFlight) return
    inFlight = true
    notify({ WATCHDOG: '1' }, { ...options, onError }).catch(onError).finally(() => { inFlight = false })
  }, interval)
  timer.unref()
  return () => { clearInterval(timer) }
}
