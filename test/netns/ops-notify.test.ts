/**
 * sd_notify from the real daemon: NOTIFY_SOCKET points at a unix datagram socket that a python3 receiver (standing
 * in for PID 1: it also closes the barrier fd systemd-notify passes) binds in the router namespace. READY=1 comes
 * only once the daemon is ready; SIGHUP brings RELOADING=1 with MONOTONIC_USEC on CLOCK_MONOTONIC, then READY=1;
 * SIGTERM brings STOPPING=1.
 */
import { mkdtempSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { createInterface } from 'node:readline'
import t, { type Test } from 'tap'
import type { Topology } from '../../src/lab/topology.js'
import { waitFor } from '../../src/lab/wait.js'
import { privileged } from '../helpers/privileged.js'
import { distMissing } from '../helpers/router-e2e.js'
import { opsDaemon, opsEnv, opsTopology, v4 } from '../helpers/ops-e2e.js'

const missing = distMissing()
if (missing !== null) t.fail(missing)

const RECEIVER = `
import socket, sys, os, array, json, time
s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
s.bind(sys.argv[1])
s.settimeout(60)
print(json.dumps({"listening": True}), flush=True)
try:
    while True:
        data, anc, flags, addr = s.recvmsg(65536, socket.CMSG_SPACE(16 * 4))
        mono = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
        wall = time.time_ns() // 1000000
        for level, kind, d in anc:
            if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
                a = array.array('i'); a.frombytes(d[:len(d) - len(d) % a.itemsize])
                for fd in a: os.close(fd)
        text = data.decode("utf-8", "replace")
        if text.strip() == "BARRIER=1": continue
        print(json.dumps({"data": text, "monoUsec": mono, "wallMs": wall}), flush=True)
except socket.timeout:
    pass
`

/** A short path (sun_path holds 108 bytes; tap's test dirs are longer), removed in teardown. */
function socketPath (t: Test): string {
  const dir = mkdtempSync(join(tmpdir(), 'eropse2e-notify-'))
  t.teardown(() => { rmSync(dir, { recursive: true, force: true }) })
  return join(dir, 'notify.sock')
}

interface Datagram { data: string, monoUsec: number, wallMs: number, fields: Record<string, string> }

async function receiver (t: Test, topo: Topology, path: string): Promise<Datagram[]> {
  const child = topo.spawn('router', ['python3', '-c', RECEIVER, path])
  t.teardown(() => { child.kill('SIGKILL') })
  const got: Datagram[] = []
  let listening = false
  let stderr = ''
  child.stderr?.on('data', (b: Buffer) => { stderr += b.toString() })
  if (child.stdout !== null) {
    createInterface({ input: child.stdout }).on('line', (line) => {
      const m = JSON.parse(line) as { listening?: true, data: string, monoUsec: number, wallMs: number }
      if (m.listening === true) { listening = true; return }
      const fields = Object.fromEntries(m.data.split('\n').filter((l) => l !== '').map((l) => [l.slice(0, l.indexOf('=')), l.slice(l.indexOf('=') + 1)]))
      got.push({ ...m, fields })
    })
  }
  await waitFor(() => listening || child.exitCode !== null, { what: 'the notify receiver to bind', timeoutMs: 10_000, intervalMs: 10 })
  if (!listening) throw new Error(`notify receiver failed: ${stderr}`)
  return got
}

t.test('READY=1 only once ready, RELOADING=1 with a monotonic timestamp on SIGHUP, STOPPING=1 on SIGTERM', privileged(), async (t) => {
  const topo = await opsTopology(t)
  const path = socketPath(t)
  const got = await receiver(t, topo, path)
  const router = await opsDaemon(t, topo, opsEnv('http-proxy', { EGRESS_HTTP_PROXY_DESTINATION: `${v4.dest}\n`, NOTIFY_SOCKET: path }))
  const readyLine = router.logs.find((l) => l.event === 'readiness' && l.ready === true)
  const ready = await waitFor(() => got[0], { what: 'the first notification', timeoutMs: 10_000, intervalMs: 10 })
  t.equal(ready.fields.READY, '1', `the first notification is READY=1 (${JSON.stringify(ready.data)})`)
  t.equal(ready.fields.STATUS, 'serving (http-proxy)', 'with a STATUS')
  t.ok(readyLine !== undefined && ready.wallMs >= (readyLine.time as number), 'it arrived after the daemon logged "ready"')
  const rules = router.logs.find((l) => l.event === 'rules')
  t.ok(rules !== undefined && ready.wallMs >= (rules.time as number), 'and after the rules were in place')

  const before = process.hrtime.bigint() / 1000n // CLOCK_MONOTONIC, the clock MONOTONIC_USEC is on
  process.kill(router.child.pid as number, 'SIGHUP')
  const reloading = await waitFor(() => got.find((d) => d.fields.RELOADING === '1'), { what: 'RELOADING=1', timeoutMs: 10_000, intervalMs: 10 })
  const mono = BigInt(reloading.fields.MONOTONIC_USEC ?? '-1')
  t.ok(mono >= before && mono <= BigInt(reloading.monoUsec), `MONOTONIC_USEC ${mono} is CLOCK_MONOTONIC: between the SIGHUP (${before}) and the receipt (${reloading.monoUsec})`)
  await router.waitForLog((l) => l.event === 'reloaded', 'the reloaded line')
  const readyAgain = await waitFor(() => got.slice(got.indexOf(reloading) + 1).find((d) => d.fields.READY === '1'), { what: 'READY=1 after the reload', timeoutMs: 10_000, intervalMs: 10 })
  t.ok(readyAgain, 'READY=1 follows the reload')

  const exit = router.stop('SIGTERM', 20_000)
  const stopping = await waitFor(() => got.find((d) => d.fields.STOPPING === '1'), { what: 'STOPPING=1', timeoutMs: 10_000, intervalMs: 10 })
  t.ok(stopping, `STOPPING=1 on SIGTERM (${JSON.stringify(stopping.data)})`)
  t.same(await exit, { code: 0, signal: null }, 'exit 0')
  t.same(got.map((d) => Object.keys(d.fields).filter((k) => k !== 'STATUS' && k !== 'MONOTONIC_USEC').join('+')), ['READY', 'RELOADING', 'READY', 'STOPPING'],
    'the whole conversation, in order: READY, RELOADING, READY, STOPPING')
})

t.test('init mode sets up and exits without "ready" (no readiness to report) and without READY=1', privileged(), async (t) => {
  const topo = await opsTopology(t)
  const path = socketPath(t)
  const got = await receiver(t, topo, path)
  const router = await opsDaemon(t, topo, opsEnv('redirect', { EGRESS_ROUTER_MODE: 'init', EGRESS_DESTINATION: `${v4.dest}\n`, NOTIFY_SOCKET: path }), { ready: false })
  t.same(await router.exited, { code: 0, signal: null }, 'init mode exits 0')
  t.ok(router.logs.some((l) => l.event === 'rules'), 'the rules were applied')
  t.ok(router.logs.some((l) => l.event === 'init-done'), 'init-done logged')
  t.same(router.logs.filter((l) => l.event === 'readiness'), [], 'no readiness line at all')
  t.same(got, [], 'no notification')
})
