/**
 * SIGTERM/SIGINT stop (once; a second one while stopping is logged and ignored: the drain has its own
 * deadline), SIGHUP reloads (one at a time; a HUP during a reload runs one more reload afterwards).
 * A signal-driven shutdown is not an error.
 */
export function onSignals (handlers: { stop: (signal: NodeJS.Signals) => Promise<void>, reload: () => Promise<void> }): () => void {
  let stopping = false
  let reloading: Promise<void> | null = null
  let again = false

  const stop = (signal: NodeJS.Signals): void => {
    if (stopping) return
    stopping = true
    void handlers.stop(signal)
  }
  const reload = (): void => {
    if (stopping) return
    if (reloading !== null) { again = true; return }
    reloading = handlers.reload().catch(() => {}).finally(() => {
      reloading = null
      if (again) { again = false; reload() }
    })
  }
  const onTerm = (): void => stop('SIGTERM')
  const onInt = (): void => stop('SIGINT')
  process.on('SIGTERM', onTerm)
  process.on('SIGINT', onInt)
  process.on('SIGHUP', reload)
  return () => {
    process.off('SIGTERM', onTerm)
    process.off('SIGINT', onInt)
    process.off('SIGHUP', reload)
  }
}
