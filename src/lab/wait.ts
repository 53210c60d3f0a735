/**
 * Waiting for a condition with a deadline — the lab's and the tests' only way to wait. A failed wait
 * names what it waited for and the last thing it saw, so the failure explains itself.
 */
import { inspect } from 'node:util'
import { EgressError } from '../errors.js'

export interface WaitOptions {
  /** What is being waited for, as it should read in the error: "the server's listening line". */
  what: string
  /** Default 5 s. */
  timeoutMs?: number
  /** Pause between attempts. Default 25 ms. */
  intervalMs?: number
}

export class WaitTimeoutError extends EgressError {
  readonly what: string
  readonly attempts: number
  readonly lastValue: unknown
  constructor (what: string, timeoutMs: number, attempts: number, lastValue: unknown, lastError: unknown) {
    const last = lastError !== undefined
      ? `last error: ${lastError instanceof Error ? lastError.message : inspect(lastError)}`
      : `last value: ${inspect(lastValue, { depth: 3, breakLength: Infinity, maxStringLength: 500 })}`
    super('ERR_WAIT_TIMEOUT', `timed out after ${timeoutMs} ms (${attempts} attempts) waiting for ${what}; ${last}`,
      lastError !== undefined ? { cause: lastError } : undefined)
    this.what = what
    this.attempts = attempts
    this.lastValue = lastValue
  }
}

/**
 * Calls fn until it returns (or resolves to) a truthy value, and resolves with that value. A throw
 * counts as "not yet". Rejects with WaitTimeoutError once timeoutMs has passed — also when a single
 * call of fn hangs, so the wait always settles by its deadline.
 */
export async function waitFor<T> (fn: () => T | Promise<T>, opts: WaitOptions): Promise<NonNullable<T>> {
  const timeoutMs = opts.timeoutMs ?? 5_000
  const intervalMs = opts.intervalMs ?? 25
  const deadline = Date.now() + timeoutMs
  let attempts = 0
  let lastValue: unknown
  let lastError: unknown
  for (;;) {
    attempts++
    const remaining = deadline - Date.now()
    try {
      const outcome = await withDeadline(Promise.resolve().then(fn), Math.max(remaining, 1))
      if (outcome.done) {
        if (outcome.value) return outcome.value as NonNullable<T>
        lastValue = outcome.value
        lastError = undefined
      } else {
        lastError = new Error('the last attempt had not settled by the deadline')
      }
    } catch (err) {
      lastError = err
    }
    const left = deadline - Date.now()
    if (left <= 0) throw new WaitTimeoutError(opts.what, timeoutMs, attempts, lastValue, lastError)
    await pause(Math.min(intervalMs, left))
  }
}

/** Settles with the promise's value, or { done: false } once ms have passed (the promise is left to settle alone). */
async function withDeadline<T> (p: Promise<T>, ms: number): Promise<{ done: true, value: T } | { done: false }> {
  let timer: NodeJS.Timeout | undefined
  const late = new Promise<{ done: false }>((resolve) => { timer = setTimeout(() => resolve({ done: false }), ms) })
  try {
    return await Promise.race([p.then((value) => ({ done: true as const, value })), late])
  } finally {
    clearTimeout(timer)
  }
}

/** The poll interval of waitFor; not exported, so nothing else sleeps blindly. */
async function pause (ms: number): Promise<void> {
  await new Promise<void>((resolve) => setTimeout(resolve, ms))
}
