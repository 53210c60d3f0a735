import { execFileSync, spawn } from 'node:child_process'
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

t.test('the monitor child dies with its parent, even when the parent is SIGKILLed', privileged(), async (t) => {
  const ns = `ernftmon-${process.pid}-orphan`
  execFileSync('ip', ['netns', 'add', ns])
  t.teardown(() => { execFileSync('ip', ['netns', 'del', ns]) })
  // A parent process of its own (the test runner must survive): it starts the monitor, says so, and waits.
  const moduleUrl = new URL('../../src/nft/monitor.ts', import.meta.url).href
  const parent = spawn(process.execPath, [...process.execArgv, '--input-type=module', '-e',
    `const { startNftMonitor } = await import(${JSON.stringify(moduleUrl)});
     startNftMonitor({ prefix: ['ip', 'netns', 'exec', ${JSON.stringify(ns)}], onChange: () => { process.stdout.write('change\\n') } });
     setInterval(() => {}, 1000)`], { stdio: ['ignore', 'pipe', 'inherit'] })
  t.teardown(() => { parent.kill('SIGKILL') })
  let out = ''
  parent.stdout.on('data', (b: Buffer) => { out += b.toString() })
  const pids = (): string[] => execFileSync('ip', ['netns', 'pids', ns]).toString().trim().split('\n').filter((p) => p !== '')
  await waitFor(() => out.includes('change') && pids().length > 0, { what: 'the monitor child running in the namespace', timeoutMs: 15_000 })
  const child = pids()
  t.equal(child.length, 1, 'one monitor child')
  parent.kill('SIGKILL')
  await waitFor(() => pids().length === 0, { what: `the monitor child ${child.join(', ')} to die with its parent`, timeoutMs: 5_000 })
  t.same(pids(), [], 'no orphaned nft monitor')
})
