/**
 * Runs one command — optionally inside a network namespace via `ip netns exec` — with a deadline,
 * and collects its output into a typed result. Lab and test code only: the daemon never shells out.
 */
import { spawn, type ChildProcess } from 'node:child_process'
import { EgressError } from '../errors.js'

export interface ExecOptions {
  /** Run inside this network namespace (`ip netns exec NS argv…`). */
  netns?: string
  /** Kill the command (its whole process group, SIGKILL) after this long. Default 10 s. */
  timeoutMs?: number
  /** Written to stdin, which is then closed; without it stdin is /dev/null. */
  input?: string | Buffer
  env?: NodeJS.ProcessEnv
  cwd?: string
  /** Output beyond this many bytes per stream is dropped (and `truncated` set). Default 16 MiB. */
  maxOutputBytes?: number
}

export interface ExecResult {
  /** What actually ran, `ip netns exec …` included. */
  argv: readonly string[]
  /** Exit status; null when killed by a signal. */
  code: number | null
  signal: NodeJS.Signals | null
  stdout: string
  stderr: string
  timedOut: boolean
  truncated: boolean
}

const DEFAULT_TIMEOUT_MS = 10_000
const DEFAULT_MAX_OUTPUT = 16 * 1024 * 1024

/** A command could not start, failed, or ran out of time. `result` is set when it ran at all. */
export class CommandError extends EgressError {
  readonly argv: readonly string[]
  readonly result: ExecResult | undefined
  constructor (argv: readonly string[], result: ExecResult | undefined, options?: { cause?: unknown }) {
    super(result === undefined ? 'ERR_COMMAND_SPAWN' : 'ERR_COMMAND', describe(argv, result, options?.cause), options)
    this.argv = argv
    this.result = result
  }
}

function describe (argv: readonly string[], result: ExecResult | undefined, cause: unknown): string {
  const cmd = argv.join(' ')
  if (result === undefined) return `${cmd}: could not start: ${cause instanceof Error ? cause.message : String(cause)}`
  const how = result.timedOut
    ? 'timed out'
    : result.signal !== null ? `killed by ${result.signal}` : `exited with ${String(result.code)}`
  const stderr = result.stderr.trim()
  return stderr === '' ? `${cmd}: ${how}` : `${cmd}: ${how}: ${stderr}`
}

/** Equivalent to: ip netns exec $netns $argv… (or argv unchanged without a namespace). */
export function netnsArgv (netns: string | undefined, argv: readonly string[]): string[] {
  if (argv.length === 0) throw new TypeError('netnsArgv: empty command')
  return netns === undefined ? [...argv] : ['ip', 'netns', 'exec', netns, ...argv]
}

/**
 * Runs argv to completion or its deadline. Resolves with the result whatever the exit status
 * (callers decide what a failure is — see runOk); rejects only when the program cannot start.
 * The command gets its own process group so a timeout kills whatever it forked too.
 */
export async function run (argv: readonly string[], opts: ExecOptions = {}): Promise<ExecResult> {
  const full = netnsArgv(opts.netns, argv)
  const timeoutMs = opts.timeoutMs ?? DEFAULT_TIMEOUT_MS
  const max = opts.maxOutputBytes ?? DEFAULT_MAX_OUTPUT
  return await new Promise<ExecResult>((resolve, reject) => {
    let child: ChildProcess
    try {
      child = spawn(full[0] as string, full.slice(1), {
        stdio: [opts.input === undefined ? 'ignore' : 'pipe', 'pipe', 'pipe'],
        env: opts.env,
        cwd: opts.cwd,
        detached: true
      })
    } catch (err) {
      reject(new CommandError(full, undefined, { cause: err }))
      return
    }
    const out: Buffer[] = []
    const err: Buffer[] = []
    let outLen = 0
    let errLen = 0
    let truncated = false
    let timedOut = false
    child.stdout?.on('data', (b: Buffer) => {
      if (outLen + b.length > max) { truncated = true; b = b.subarray(0, Math.max(0, max - outLen)) }
      outLen += b.length
      out.push(b)
    })
    child.stderr?.on('data', (b: Buffer) => {
      if (errLen + b.length > max) { truncated = true; b = b.subarray(0, Math.max(0, max - errLen)) }
      errLen += b.length
      err.push(b)
    })
    const timer = setTimeout(() => {
      timedOut = true
      killGroup(child, 'SIGKILL')
    }, timeoutMs)
    child.once('error', (e) => {
      clearTimeout(timer)
      reject(new CommandError(full, undefined, { cause: e }))
    })
    // 'close' (not 'exit'): all output has been read by then.
    child.once('close', (code, signal) => {
      clearTimeout(timer)
      resolve({
        argv: full,
        code,
        signal,
        stdout: Buffer.concat(out).toString('utf8'),
        stderr: Buffer.concat(err).toString('utf8'),
        timedOut,
        truncated
      })
    })
    if (opts.input !== undefined && child.stdin !== null) {
      // A command that exits without reading its stdin must not crash us with EPIPE.
      child.stdin.on('error', () => {})
      child.stdin.end(opts.input)
    }
  })
}

/** run(), but a non-zero exit, a signal or a timeout rejects with CommandError. */
export async function runOk (argv: readonly string[], opts: ExecOptions = {}): Promise<ExecResult> {
  const result = await run(argv, opts)
  if (result.code !== 0 || result.timedOut) throw new CommandError(result.argv, result)
  return result
}

/** Signals a child's process group (spawned detached), falling back to the child alone. "Already gone" is fine. */
export function killGroup (child: ChildProcess, signal: NodeJS.Signals): void {
  if (child.pid === undefined || child.exitCode !== null || child.signalCode !== null) return
  try {
    process.kill(-child.pid, signal)
  } catch {
    try { child.kill(signal) } catch { /* already gone */ }
  }
}

/** Resolves true once the child has exited, false if it is still running after timeoutMs. */
export async function waitForExit (child: ChildProcess, timeoutMs: number): Promise<boolean> {
  if (child.exitCode !== null || child.signalCode !== null) return true
  return await new Promise<boolean>((resolve) => {
    const timer = setTimeout(() => { child.off('exit', onExit); resolve(false) }, timeoutMs)
    const onExit = (): void => { clearTimeout(timer); resolve(true) }
    child.once('exit', onExit)
  })
}

/** SIGTERM, then SIGKILL if it has not exited after graceMs. Resolves once it has exited (bounded). */
export async function stopChild (child: ChildProcess, graceMs = 2_000): Promise<void> {
  killGroup(child, 'SIGTERM')
  if (await waitForExit(child, graceMs)) return
  killGroup(child, 'SIGKILL')
  await waitForExit(child, graceMs)
}
