/**
 * nft/monitor.ts against the kernel: a process of its own inside a fresh network namespace starts the monitor and
 * prints a line per onChange; the test changes that namespace's ruleset with the real `nft`. No child process of the
 * monitor exists to be orphaned: the namespace holds the one node process.
 */
import { execFileSync, spawn, type ChildProcess } from 'node:child_process'
import { createInterface } from 'node:readline'
import t, { type Test } from 'tap'
import { stopChild } from '../../src/lab/exec.js'
import { waitFor } from '../../src/lab/wait.js'
import { privileged } from '../helpers/privileged.js'

function nft (ns: string, script: string): void {
  execFileSync('ip', ['netns', 'exec', ns, 'nft', '-f', '-'], { input: script })
}

const pids = (ns: string): string[] => execFileSync('ip', ['netns', 'pids', ns]).toString().trim().split('\n').filter((p) => p !== '')

interface Watcher { child: ChildProcess, lines: string[], changes: () => number, send: (cmd: string) => void }

/** A node process in `ns` running the monitor: prints `change <events>` per onChange, `error <message>`; `stop` on stdin stops it. */
function watcher (t: Test, ns: string): Watcher {
  const moduleUrl = new URL('../../src/nft/monitor.ts', import.meta.url).href
  const child = spawn('ip', ['netns', 'exec', ns, process.execPath, ...process.execArgv, '--input-type=module', '-e',
    `const { startNftMonitor } = await import(${JSON.stringify(moduleUrl)});
     const mon = startNftMonitor({ debounceMs: 20, onChange: () => { process.stdout.write('change ' + mon.events() + '\\n') }, onError: (e) => { process.stdout.write('error ' + e.message + '\\n') } });
     process.stdin.on('data', (b) => { if (String(b).includes('stop')) { mon.stop(); process.stdout.write('stopped\\n') } });
     setInterval(() => {}, 1000)`], { stdio: ['pipe', 'pipe', 'inherit'] })
  t.teardown(async () => { await stopChild(child, 2_000) })
  const lines: string[] = []
  createInterface({ input: child.stdout as NodeJS.ReadableStream }).on('line', (l) => { lines.push(l) })
  return { child, lines, changes: () => lines.filter((l) => l.startsWith('change')).length, send: (cmd) => { child.stdin?.write(cmd + '\n') } }
}

t.test('the monitor reports ruleset changes in its namespace from a netlink socket, and stops', privileged(), async (t) => {
  const ns = `ernftmon-${process.pid}`
  execFileSync('ip', ['netns', 'add', ns])
  t.teardown(() => { execFileSync('ip', ['netns', 'del', ns]) })
  const w = watcher(t, ns)
  await waitFor(() => w.changes() >= 1, { what: 'the first check once subscribed', timeoutMs: 15_000 })
  t.equal(w.lines[0], 'change 0', 'one onChange once subscribed, before any event')
  t.equal(pids(ns).length, 1, 'the namespace holds one process: the monitor has no child')

  const before = w.changes()
  nft(ns, 'add table ip foreign { }\nadd chain ip foreign c { type filter hook input priority 0; }\n')
  await waitFor(() => w.changes() > before, { what: 'a change for a new table and chain', timeoutMs: 5000 })
  t.equal(w.changes(), before + 1, 'one transaction, several messages: one onChange')

  const beforeFlush = w.changes()
  execFileSync('ip', ['netns', 'exec', ns, 'nft', 'flush', 'ruleset'])
  await waitFor(() => w.changes() > beforeFlush, { what: 'a change for `nft flush ruleset`', timeoutMs: 5000 })
  const last = w.lines.filter((l) => l.startsWith('change')).pop() ?? ''
  t.ok(Number(last.split(' ')[1]) >= 3, `each change arrived as netlink messages (${last})`)

  // a change in another namespace is not ours
  const quietBefore = w.changes()
  const other = `${ns}-other`
  execFileSync('ip', ['netns', 'add', other])
  t.teardown(() => { execFileSync('ip', ['netns', 'del', other]) })
  nft(other, 'add table ip elsewhere { }\n')
  await new Promise((resolve) => setTimeout(resolve, 300))
  t.equal(w.changes(), quietBefore, 'a change in another namespace is not reported')

  w.send('stop')
  await waitFor(() => w.lines.includes('stopped'), { what: 'the monitor to stop', timeoutMs: 5000 })
  const afterStop = w.changes()
  nft(ns, 'add table ip quiet { }\n')
  await new Promise((resolve) => setTimeout(resolve, 300))
  t.equal(w.changes(), afterStop, 'no events after stop')
  t.same(w.lines.filter((l) => l.startsWith('error')), [], 'no error on the way')
})
