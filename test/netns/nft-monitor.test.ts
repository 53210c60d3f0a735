import { execFileSync } from 'node:child_process'
import t from 'tap'
import { startNftMonitor } from '../../src/nft/monitor.js'
import { waitFor } from '../../src/lab/wait.js'
import { privileged } from '../helpers/privileged.js'

function nft (ns: string, script: string): void {
  execFileSync('ip', ['netns', 'exec', ns, 'nft', '-f', '-'], { input: script })
}

t.test('nft monitor reports ruleset changes, survives its child dying, and stops', privileged(), async (t) => {
  const ns = `ernftmon-${process.pid}`
  execFileSync('ip', ['netns', 'add', ns])
  t.teardown(() => { execFileSync('ip', ['netns', 'del', ns]) })
  let changes = 0
  const errors: Error[] = []
  const mon = startNftMonitor({ prefix: ['ip', 'netns', 'exec', ns], onChange: () => { changes++ }, onError: (e) => errors.push(e), debounceMs: 20 })
  t.teardown(() => mon.stop())
  await waitFor(() => changes >= 1, { what: 'the start-up check', timeoutMs: 5000 })
  // give the child a moment to subscribe before the first change: wait for it in the namespace's process list
  await waitFor(() => execFileSync('ip', ['netns', 'pids', ns]).toString().trim() !== '', { what: 'nft monitor running', timeoutMs: 5000 })

  const before = changes
  nft(ns, 'add table ip foreign { }\nadd chain ip foreign c { type filter hook input priority 0; }\n')
  await waitFor(() => changes > before && mon.events() >= 1, { what: 'a change event for a new table', timeoutMs: 5000 })

  const beforeFlush = changes
  execFileSync('ip', ['netns', 'exec', ns, 'nft', 'flush', 'ruleset'])
  await waitFor(() => changes > beforeFlush, { what: 'a change event for `nft flush ruleset`', timeoutMs: 5000 })

  // kill the monitor child: it is restarted and the caller is told to re-check
  const pid = execFileSync('ip', ['netns', 'pids', ns]).toString().trim().split('\n')[0] as string
  const beforeKill = changes
  process.kill(Number(pid), 'SIGKILL')
  await waitFor(() => errors.length >= 1 && changes > beforeKill, { what: 'restart after the child died', timeoutMs: 5000 })
  t.match(errors[0]?.message, /nft monitor exited/)
  await waitFor(() => execFileSync('ip', ['netns', 'pids', ns]).toString().trim() !== '', { what: 'nft monitor running again', timeoutMs: 5000 })
  const beforeAgain = changes
  nft(ns, 'add table ip again { }\n')
  await waitFor(() => changes > beforeAgain, { what: 'events after the restart', timeoutMs: 5000 })

  mon.stop()
  await waitFor(() => execFileSync('ip', ['netns', 'pids', ns]).toString().trim() === '', { what: 'the monitor child to exit on stop', timeoutMs: 5000 })
  const afterStop = changes
  nft(ns, 'add table ip quiet { }\n')
  await new Promise((resolve) => setTimeout(resolve, 200))
  t.equal(changes, afterStop, 'no events after stop')
})
