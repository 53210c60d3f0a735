/**
 * sd_notify for real: a python3 AF_UNIX SOCK_DGRAM receiver stands in for PID 1 (it also closes the
 * barrier fd systemd-notify passes, as PID 1 does), and the datagrams are compared byte for byte.
 */
import t, { type Test } from 'tap'
import { spawn, spawnSync } from 'node:child_process'
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { createInterface } from 'node:readline'
import {
  notify, readyState, reloadingState, startWatchdog, stoppingState, toAssignments, watchdogIntervalMs
} from '../../../src/observe/sd-notify.js'

function missing (tool: string): boolean {
  return spawnSync('sh', ['-c', `command -v ${tool}`], { stdio: 'ignore' }).status !== 0
}

/** Skip without the tools outside CI; under CI=true a skip would hide a broken machine. */
function needs (...tools: string[]): { skip: string | false } {
  const absent = tools.filter(missing)
  if (absent.length === 0) return { skip: false }
  if (process.env.CI === 'true') throw new Error(`needed under CI: ${absent.join(', ')}`)
  return { skip: `needs ${absent.join(', ')}` }
}

const RECEIVER = `
import socket, sys, os, array, json
path = sys.argv[1]
if path.startswith('@'): path = '\\0' + path[1:]
s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
s.bind(path)
s.settimeout(30)
print(json.dumps({"listening": True}), flush=True)
try:
    while True:
        data, anc, flags, addr = s.recvmsg(65536, socket.CMSG_SPACE(16 * 4))
        fds = []
        for level, kind, d in anc:
            if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
                a = array.array('i'); a.frombytes(d[:len(d) - len(d) % a.itemsize]); fds.extend(a)
        for fd in fds: os.close(fd)
        print(json.dumps({"data": data.decode("utf-8", "replace"), "fds": len(fds)}), flush=True)
except socket.timeout:
    pass
`

interface Datagram { data: string, fds: number }

/** Starts the receiver bound to `address` (a path or `@abstract`); resolves once it is bound. */
async function receiver (t: Test, address: string): Promise<{ next: () => Promise<Datagram> }> {
  const child = spawn('python3', ['-c', RECEIVER, address], { stdio: ['ignore', 'pipe', 'inherit'] })
  t.teardown(() => { child.kill('SIGKILL') })
  const queue: Datagram[] = []
  const waiters: Array<(d: Datagram) => void> = []
  let onListening: (() => void) | undefined
  const listening = new Promise<void>((resolve) => { onListening = resolve })
  createInterface({ input: child.stdout }).on('line', (line) => {
    const msg = JSON.parse(line) as Datagram | { listening: true }
    if ('listening' in msg) { onListening?.(); return }
    const waiter = waiters.shift()
    if (waiter !== undefined) waiter(msg); else queue.push(msg)
  })
  const exited = new Promise<never>((_resolve, reject) => {
    child.once('exit', (code) => { reject(new Error(`receiver exited (${String(code)})`)) })
  })
  exited.catch(() => {})
  await Promise.race([listening, exited])
  return {
    next: async () => {
      const queued = queue.shift()
      if (queued !== undefined) return queued
      return await Promise.race([new Promise<Datagram>((resolve) => waiters.push(resolve)), exited])
    }
  }
}

t.test('without NOTIFY_SOCKET nothing is sent and the answer is false', async t => {
  t.equal(await notify({ READY: '1' }, { env: {}, command: '/nonexistent/systemd-notify' }), false)
  t.equal(await notify({ READY: '1' }, { env: { NOTIFY_SOCKET: '' }, command: '/nonexistent/systemd-notify' }), false)
})

t.test('assignments keep key order, and a newline in a value cannot forge another key', async t => {
  t.same(toAssignments({ READY: '1', STATUS: 'a\nMAINPID=1\r\nb' }), ['READY=1', 'STATUS=a MAINPID=1 b'])
  t.throws(() => toAssignments({ 'READY=1\nX': '1' }), TypeError)
  t.throws(() => toAssignments({ ready: '1' }), TypeError)
  await t.rejects(notify({ '--ready': '1' }, { env: { NOTIFY_SOCKET: '/nonexistent' } }), TypeError)
})

t.test('state builders', async t => {
  t.same(readyState('serving'), { READY: '1', STATUS: 'serving' })
  t.same(stoppingState(), { STOPPING: '1', STATUS: 'draining connections' })
  const before = process.hrtime.bigint() / 1000n
  const reloading = reloadingState()
  const after = process.hrtime.bigint() / 1000n
  t.equal(reloading.RELOADING, '1')
  t.match(reloading.MONOTONIC_USEC, /^\d+$/)
  const usec = BigInt(reloading.MONOTONIC_USEC ?? '0')
  t.ok(usec >= before && usec <= after, 'MONOTONIC_USEC is CLOCK_MONOTONIC in microseconds')
  t.same(Object.keys(reloading), ['RELOADING', 'STATUS', 'MONOTONIC_USEC'])
})

t.test('watchdog interval is half of WATCHDOG_USEC, only for our PID', async t => {
  t.equal(watchdogIntervalMs({}, 42), null)
  t.equal(watchdogIntervalMs({ WATCHDOG_USEC: '30000000' }, 42), 15000)
  t.equal(watchdogIntervalMs({ WATCHDOG_USEC: '30000000', WATCHDOG_PID: '42' }, 42), 15000)
  t.equal(watchdogIntervalMs({ WATCHDOG_USEC: '30000000', WATCHDOG_PID: '43' }, 42), null)
  t.equal(watchdogIntervalMs({ WATCHDOG_USEC: 'soon' }, 42), null)
  t.equal(watchdogIntervalMs({ WATCHDOG_USEC: '0' }, 42), null)
})

t.test('a missing sender under NOTIFY_SOCKET is reported, and never rejects', async t => {
  const errors: Error[] = []
  const sent = await notify({ READY: '1' }, { env: { NOTIFY_SOCKET: '/run/none' }, command: '/nonexistent/systemd-notify', onError: (e) => errors.push(e) })
  t.equal(sent, false)
  t.equal(errors.length, 1)
  t.match(errors[0], { code: 'ERR_SD_NOTIFY', message: /cannot run \/nonexistent\/systemd-notify/ })
})

t.test('without onError a failure becomes one process warning, however many follow', async t => {
  const warnings: Error[] = []
  const onWarning = (w: Error): void => { warnings.push(w) }
  process.on('warning', onWarning)
  t.teardown(() => { process.off('warning', onWarning) })
  const options = { env: { NOTIFY_SOCKET: '/run/none' }, command: '/nonexistent/systemd-notify' }
  t.same(await Promise.all([notify({ READY: '1' }, options), notify({ STATUS: 'x' }, options)]), [false, false])
  await new Promise((resolve) => setImmediate(resolve))
  t.equal(warnings.length, 1)
  t.match(warnings[0], { code: 'ERR_SD_NOTIFY', message: /cannot run/ })
})

t.test('a sender that hangs is killed and reported', async t => {
  const dir = mkdtempSync(join(tmpdir(), 'egress-sd-notify-'))
  t.teardown(() => { rmSync(dir, { recursive: true, force: true }) })
  const hang = join(dir, 'hang')
  writeFileSync(hang, '#!/bin/sh\nexec sleep 30\n', { mode: 0o755 })
  const errors: Error[] = []
  t.equal(await notify({ READY: '1' }, { env: { NOTIFY_SOCKET: '/run/none' }, command: hang, timeoutMs: 50, onError: (e) => errors.push(e) }), false)
  t.match(errors, [{ code: 'ERR_SD_NOTIFY', message: /did not finish within 50 ms/ }])
})

t.test('datagrams on a real socket', needs('python3', 'systemd-notify'), async t => {
  const dir = mkdtempSync(join(tmpdir(), 'egress-sd-notify-'))
  t.teardown(() => { rmSync(dir, { recursive: true, force: true }) })

  t.test('path socket: READY and STATUS in one datagram, then the barrier', async t => {
    const path = join(dir, 'notify.sock')
    const rx = await receiver(t, path)
    t.equal(await notify(readyState('serving 3 rules'), { env: { NOTIFY_SOCKET: path } }), true)
    t.same(await rx.next(), { data: 'READY=1\nSTATUS=serving 3 rules', fds: 0 })
    t.same(await rx.next(), { data: 'BARRIER=1', fds: 1 }, 'delivery is confirmed by the barrier')
  })

  t.test('abstract socket (@name)', async t => {
    const name = `@egress-sd-notify-${process.pid}-${Date.now()}`
    const rx = await receiver(t, name)
    t.equal(await notify(stoppingState(), { env: { NOTIFY_SOCKET: name } }), true)
    t.same(await rx.next(), { data: 'STOPPING=1\nSTATUS=draining connections', fds: 0 })
    t.same(await rx.next(), { data: 'BARRIER=1', fds: 1 })
  })

  t.test('calls not awaited still arrive in call order', async t => {
    const path = join(dir, 'order.sock')
    const rx = await receiver(t, path)
    const env = { NOTIFY_SOCKET: path }
    const sent = await Promise.all([
      notify({ STATUS: 'one' }, { env }),
      notify(reloadingState('two'), { env }),
      notify({ READY: '1' }, { env })
    ])
    t.same(sent, [true, true, true])
    const data: string[] = []
    for (let i = 0; i < 6; i++) data.push((await rx.next()).data)
    t.equal(data[0], 'STATUS=one')
    t.match(data[2], /^RELOADING=1\nSTATUS=two\nMONOTONIC_USEC=\d+$/)
    t.equal(data[4], 'READY=1')
    t.same([data[1], data[3], data[5]], ['BARRIER=1', 'BARRIER=1', 'BARRIER=1'])
  })

  t.test('watchdog pings WATCHDOG=1 at half the interval', async t => {
    const path = join(dir, 'watchdog.sock')
    const rx = await receiver(t, path)
    const errors: Error[] = []
    const stop = startWatchdog((err) => errors.push(err), { env: { NOTIFY_SOCKET: path, WATCHDOG_USEC: '100000' } })
    t.teardown(stop)
    t.same(await rx.next(), { data: 'WATCHDOG=1', fds: 0 })
    stop()
    t.same(errors, [])
  })

  t.test('nobody listening is a delivery failure', async t => {
    const errors: Error[] = []
    t.equal(await notify({ READY: '1' }, { env: { NOTIFY_SOCKET: join(dir, 'absent.sock') }, onError: (e) => errors.push(e) }), false)
    t.match(errors, [{ code: 'ERR_SD_NOTIFY', message: /systemd-notify failed \(exit code \d+\)/ }])
  })
})
