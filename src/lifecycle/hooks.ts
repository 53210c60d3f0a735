/**
 * Lifecycle as start/stop pairs (cilium pkg/hive/lifecycle.go): a failed start stops what already started, in
 * reverse; stop runs in reverse, collects errors and never aborts half-way.
 */
export interface Hook {
  readonly name: string
  start?: () => Promise<void> | void
  stop?: () => Promise<void> | void
}

export class StartError extends Error {
  readonly code = 'ERR_START'
  readonly hook: string
  readonly stopped: readonly string[]
  readonly stopErrors: readonly Error[]
  constructor (hook: string, stopped: readonly string[], stopErrors: readonly Error[], cause: unknown) {
    super(`${hook}: ${cause instanceof Error ? cause.message : String(cause)}`, { cause })
    this.hook = hook
    this.stopped = stopped
    this.stopErrors = stopErrors
  }
}

export class Lifecycle {
  readonly #hooks: Hook[] = []
  readonly #started: Hook[] = []

  append (hook: Hook): void {
    this.#hooks.push(hook)
  }

  /** Starts every hook in order; on failure stops the started ones in reverse and throws StartError. */
  async start (): Promise<void> {
    for (const hook of this.#hooks) {
      try {
        await hook.start?.()
      } catch (err) {
        const { stopped, errors } = await this.stop()
        throw new StartError(hook.name, stopped, errors, err)
      }
      this.#started.push(hook)
    }
  }

  /** Stops what started, in reverse; every stop runs even when an earlier one fails. */
  async stop (): Promise<{ stopped: string[], errors: Error[] }> {
    const stopped: string[] = []
    const errors: Error[] = []
    while (this.#started.length > 0) {
      const hook = this.#started.pop() as Hook
      try {
        await hook.stop?.()
        if (hook.stop !== undefined) stopped.push(hook.name)
      } catch (err) {
        errors.push(new Error(`stop ${hook.name}: ${err instanceof Error ? err.message : String(err)}`, { cause: err }))
      }
    }
    return { stopped, errors }
  }
}
