/**
 * The kernel change events the reconciler runs on (netlink/events.ts), against the kernel: a process of its own
 * inside a fresh network namespace starts a monitor and prints a line per onChange; the test changes that
 * namespace with the real `nft` (nft/monitor.ts) and the real `ip` (the network events). No child process of a
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

/**
 * A node process in `ns` running a monitor (`start` exported by `module`, a path from src/): prints
 * `change <events>` per onChange, `error <message>`; `stop` on stdin stops it.
 */
function watcher (t: Test, ns: string, module = 'nft/monitor.ts', start = 'startNftMonitor'): Watcher {
  const moduleUrl = new URL(`../../src/${module}`, import.meta.url).href
  const child = spawn('ip', ['netns', 'exec', ns, process.execPath, ...process.execArgv, '--input-type=module', '-e',
    `const { ${start}: start } = await import(${JSON.stringify(moduleUrl)});
     const mon = start({ debounceMs: 20, onChange: () => { process.stdout.write('change ' + mon.events() + '\\n') }, onError: (e) => { process.stdout.write('error ' + e.message + '\\n') } });
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

const ip = (ns: string, args: readonly string[]): void => { execFileSync('ip', ['-n', ns, ...args]) }

t.test('the network events report link, address, route and rule changes in their namespace, and stop', privileged(), async (t) => {
  const ns = `ernetmon-${process.pid}`
  execFileSync('ip', ['netns', 'add', ns])
  t.teardown(() => { execFileSync('ip', ['netns', 'del', ns]) })
  const w = watcher(t, ns, 'netlink/events.ts', 'startNetworkEvents')
  await waitFor(() => w.changes() >= 1, { what: 'the first check once subscribed', timeoutMs: 15_000 })
  t.equal(w.lines[0], 'change 0', 'one onChange once subscribed, before any event')

  const changes: Array<[string, readonly string[]]> = [
    ['a new link', ['link', 'add', 'd0', 'type', 'veth', 'peer', 'name', 'd1']],
    ['a link set up', ['link', 'set', 'd0', 'up']],
    ['an IPv4 address', ['addr', 'add', '192.0.2.5/24', 'dev', 'd0']],
    ['an IPv4 route', ['route', 'add', '198.51.100.0/24', 'via', '192.0.2.1']],
    ['an IPv4 policy rule', ['rule', 'add', 'from', '192.0.2.5', 'table', '100']],
    ['an IPv6 address', ['-6', 'addr', 'add', '2001:db8::5/64', 'dev', 'd0', 'nodad']],
    ['an IPv6 route', ['-6', 'route', 'add', '2001:db8:1::/64', 'via', '2001:db8::1']],
    ['an IPv6 policy rule', ['-6', 'rule', 'add', 'from', '2001:db8::5', 'table', '100']],
    ['an address deleted', ['addr', 'del', '192.0.2.5/24', 'dev', 'd0']],
    ['a link set down', ['link', 'set', 'd0', 'down']],
    ['a link deleted', ['link', 'del', 'd0']]
  ]
  for (const [what, args] of changes) {
    const before = w.changes()
    ip(ns, args)
    await waitFor(() => w.changes() > before, { what: `a change for ${what} (ip ${args.join(' ')})`, timeoutMs: 5000 })
    t.pass(`${what}: reported`)
  }

  // a change in another namespace is not ours
  const quietBefore = w.changes()
  const other = `${ns}-other`
  execFileSync('ip', ['netns', 'add', other])
  t.teardown(() => { execFileSync('ip', ['netns', 'del', other]) })
  ip(other, ['link', 'add', 'elsewhere', 'type', 'veth', 'peer', 'name', 'elsewhere1'])
  await new Promise((resolve) => setTimeout(resolve, 300))
  t.equal(w.changes(), quietBefore, 'a change in another namespace is not reported')

  w.send('stop')
  await waitFor(() => w.lines.includes('stopped'), { what: 'the monitor to stop', timeoutMs: 5000 })
  const afterStop = w.changes()
  ip(ns, ['link', 'add', 'quiet', 'type', 'veth', 'peer', 'name', 'quiet1'])
  await new Promise((resolve) => setTimeout(resolve, 300))
  t.equal(w.changes(), afterStop, 'no events after stop')
  t.same(w.lines.filter((l) => l.startsWith('error')), [], 'no error on the way')
})

t.test('the ruleset generation steps with every transaction in its namespace, and only there', privileged(), async (t) => {
  const ns = `ernftgen-${process.pid}`
  execFileSync('ip', ['netns', 'add', ns])
  t.teardown(() => { execFileSync('ip', ['netns', 'del', ns]) })
  const moduleUrl = new URL('../../src/nft/generation.ts', import.meta.url).href
  // a process in the namespace: prints the generation for every line on stdin
  const child = spawn('ip', ['netns', 'exec', ns, process.execPath, ...process.execArgv, '--input-type=module', '-e',
    `const { openGenerationReader } = await import(${JSON.stringify(moduleUrl)});
     const g = await openGenerationReader();
     process.stdout.write('open\\n');
     process.stdin.on('data', async () => { process.stdout.write('gen ' + await g.read() + '\\n') });
     setInterval(() => {}, 1000)`], { stdio: ['pipe', 'pipe', 'inherit'] })
  t.teardown(async () => { await stopChild(child, 2_000) })
  const lines: string[] = []
  createInterface({ input: child.stdout as NodeJS.ReadableStream }).on('line', (l) => { lines.push(l) })
  await waitFor(() => lines.includes('open'), { what: 'the reader to open', timeoutMs: 15_000 })
  const read = async (): Promise<number> => {
    const n = lines.length
    child.stdin?.write('read\n')
    const line = await waitFor(() => lines.slice(n).find((l) => l.startsWith('gen ')), { what: 'a generation', timeoutMs: 5_000, intervalMs: 10 })
    return Number(line.split(' ')[1])
  }
  const g0 = await read()
  t.equal(await read(), g0, 'unchanged while nothing changes')
  nft(ns, 'add table ip one { }\n')
  const g1 = await read()
  t.equal(g1, g0 + 1, `one transaction: ${g0} → ${g1}`)
  nft(ns, 'add table ip two { }\nadd chain ip two c { type filter hook input priority 0; }\nadd rule ip two c accept\n')
  t.equal(await read(), g1 + 1, 'a transaction of several changes steps it once')
  execFileSync('ip', ['netns', 'exec', ns, 'nft', 'flush', 'ruleset'])
  t.equal(await read(), g1 + 2, '`nft flush ruleset` steps it')
  const other = `${ns}-other`
  execFileSync('ip', ['netns', 'add', other])
  t.teardown(() => { execFileSync('ip', ['netns', 'del', other]) })
  nft(other, 'add table ip elsewhere { }\n')
  t.equal(await read(), g1 + 2, 'a transaction in another namespace does not')
})
