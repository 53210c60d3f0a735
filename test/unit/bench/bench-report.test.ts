import t from 'tap'
import {
  GROUPS, judge, median, parseIperf3, parseWrk, parseWrkText, ratio, renderGroupTable, renderProblems, WRK_JSON_MARK,
  type ScenarioResult
} from '../../../bench/report.js'
import { wrkScript } from '../../../bench/wrk-script.js'
import { parseStatCpuTicks, kbField, procStats, statState, zombieChildren, CLOCK_TICKS_PER_S } from '../../../bench/proc-stats.js'
import { hotFunctions } from '../../../bench/cpu-profile.js'
import { aclText } from '../../../bench/acl-cost.js'
import { parseHttpAcl } from '../../../src/config/http-acl.js'

const WRK_TEXT = `Running 2s test @ http://198.51.100.1:8080/
  1 threads and 50 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency     4.37ms    2.10ms  31.02ms   80.12%
    Req/Sec     6.01k   412.33     6.80k    70.00%
  Latency Distribution
     50%    4.37ms
     75%    5.10ms
     90%    6.90ms
     99%   11.69ms
  11886 requests in 2.00s, 1.90MB read
  Socket errors: connect 0, read 3, write 0, timeout 2
  Non-2xx or 3xx responses: 7
Requests/sec:   5943.00
Transfer/sec:    0.95MB
`

t.test('median takes the middle value, averages the middle two, and ignores NaN', async t => {
  t.equal(median([3, 1, 2]), 2)
  t.equal(median([4, 1, 3, 2]), 2.5)
  t.equal(median([Number.NaN, 5, Number.POSITIVE_INFINITY]), 5)
  t.ok(Number.isNaN(median([])))
})

t.test('ratio is subject ÷ peer, NaN when the peer is missing or zero', async t => {
  t.equal(ratio(12, 10), 1.2)
  t.ok(Number.isNaN(ratio(1, 0)))
  t.ok(Number.isNaN(ratio(Number.NaN, 3)))
})

t.test("wrk's text report yields rate, percentiles in ms and error counts", async t => {
  const r = parseWrkText(WRK_TEXT)
  t.same(r, { requests: 11886, durationS: 2, rps: 5943, p50Ms: 4.37, p99Ms: 11.69, socketErrors: 5, badStatus: 7 })
  t.equal(parseWrkText('wrk: unable to connect'), null)
  t.equal(parseWrkText(WRK_TEXT.replace('99%   11.69ms', '99%  1.20s'))?.p99Ms, 1200)
  t.equal(parseWrkText(WRK_TEXT.replace('50%    4.37ms', '50%  870.00us'))?.p50Ms, 0.87)
})

t.test('the done() JSON line wins over the text, with exact counts and µs latencies', async t => {
  const line = `${WRK_JSON_MARK}{"requests":12000,"duration_us":2000000,"connect":1,"read":0,"write":0,"timeout":0,"status":4,"p50_us":4321,"p99_us":11000}`
  const r = parseWrk(`${WRK_TEXT}${line}\n`)
  t.same(r, { requests: 12000, durationS: 2, rps: 6000, p50Ms: 4.321, p99Ms: 11, socketErrors: 1, badStatus: 4 })
  t.equal(parseWrk(`${WRK_JSON_MARK}{broken\n${WRK_TEXT}`)?.rps, 5943, 'a broken JSON line falls back on the text')
  t.equal(parseWrk('nothing here'), null)
})

t.test('the wrk script sets an absolute-form path, the headers, and prints the marked JSON line', async t => {
  const s = wrkScript({ path: 'http://203.0.113.10/', host: '203.0.113.10', close: true })
  t.match(s, 'wrk.path = "http://203.0.113.10/"')
  t.match(s, 'wrk.headers["Connection"] = "close"')
  t.match(s, WRK_JSON_MARK)
  t.notMatch(wrkScript({ path: '/', host: 'h', close: false }), 'Connection')
  t.throws(() => wrkScript({ path: '/\n', host: 'h', close: false }), /printable ASCII/)
})

t.test('iperf3 -J: received Gbit/s, streams and retransmits; its own error text on failure', async t => {
  const ok = JSON.stringify({ start: { test_start: { num_streams: 4 } }, end: { sum_received: { bits_per_second: 12.5e9 }, sum_sent: { retransmits: 3 } } })
  t.same(parseIperf3(ok), { gbps: 12.5, streams: 4, retransmits: 3 })
  t.throws(() => parseIperf3(JSON.stringify({ error: 'unable to connect to server: Connection refused' })), /iperf3: unable to connect/)
  t.throws(() => parseIperf3('iperf3: error'), /no JSON/)
  t.throws(() => parseIperf3('{}'), /no end.sum_received/)
})

t.test('targets: ratio floors, ratio ceilings and absolute ceilings', async t => {
  t.equal(judge({ metric: 'tcp1', kind: 'ratio-min', value: 0.95, peer: 'k' }, 9.6, 10), 'met')
  t.equal(judge({ metric: 'tcp1', kind: 'ratio-min', value: 0.95, peer: 'k' }, 9.4, 10), 'not met')
  t.equal(judge({ metric: 'kaP99', kind: 'ratio-max', value: 1, peer: 's' }, 2, 3), 'met')
  t.equal(judge({ metric: 'setupMs', kind: 'max', value: 150 }, 151, Number.NaN), 'not met')
  t.equal(judge({ metric: 'tcp1', kind: 'ratio-min', value: 1, peer: 's' }, 5, Number.NaN), 'n/a')
})

function result (id: string, samples: Record<string, number[]>, extra: Partial<ScenarioResult> = {}): ScenarioResult {
  return { id, ok: true, samples, failures: {}, notes: [], ...extra }
}

t.test('a group table shows medians, a ratio per peer, and marks each target', async t => {
  const group = GROUPS.find((g) => g.id === 'http-proxy')
  if (group === undefined) throw new Error('no http-proxy group')
  const results = new Map([
    ['http-proxy', result('http-proxy', { reqPerSec: [12_000, 13_000, 11_000], kaP99: [2, 2, 9] })],
    ['squid', result('squid', { reqPerSec: [10_000, 10_000, 10_000], kaP99: [3, 3, 3] })],
    ['tinyproxy', result('tinyproxy', {}, { ok: false, error: 'tinyproxy exited (1)' })],
    ['node-http-relay', result('node-http-relay', { reqPerSec: [24_000, 24_000, 24_000] })]
  ])
  const table = renderGroupTable(group, results)
  const lines = table.split('\n')
  t.match(lines[0], '| metric | unit | http-proxy | squid | tinyproxy | node-http-relay | ÷ squid | ÷ tinyproxy | ÷ node-http-relay | target | verdict |')
  t.ok(lines.includes('| requests, keep-alive | req/s | 12,000 | 10,000 | — | 24,000 | 1.20× | — | 0.50× | ≥ 1.2× squid | ✅ met |'), table)
  t.ok(lines.includes('| p99, keep-alive | ms | 2.00 | 3.00 | — | — | 0.67× | — | — | ≤ 1× squid | ✅ met |'), table)
  t.ok(lines.some((l) => l.startsWith('| bulk TCP, 1 stream |') && l.endsWith('| n/a |')), 'a target without figures is n/a')
  t.notOk(lines.some((l) => l.startsWith('| RSS, 10,000')), 'rows with no figure and no target are left out')
  t.same(renderProblems(group, results), ['- tinyproxy: FAILED: tinyproxy exited (1)'])
})

t.test('/proc parsing: CPU ticks after the command name, kB fields', async t => {
  const stat = '1234 (node (worker) x) S 1 1234 1234 0 -1 4194560 100 0 0 0 250 50 0 0 20 0 11 0 500 0 0'
  t.equal(parseStatCpuTicks(stat), 300)
  t.equal(statState('99 (so) (cat) Z 1 99'), 'Z')
  t.equal(parseStatCpuTicks('99 (socat) S 1 99 99 0 -1 4194560 100 0 0 0 7 3 40 20 20 0 1 0 500 0 0'), 70, 'with the CPU of children waited for')
  t.equal(kbField('Name:\tnode\nVmRSS:\t   51234 kB\n', 'VmRSS'), 51234)
  t.equal(kbField('Rss: 10 kB\nPss:     777 kB\n', 'Pss'), 777)
  t.equal(kbField('nothing', 'VmRSS'), 0)
})

t.test('procStats counts the CPU of a child that has exited and is not yet waited for', async t => {
  const { spawn } = await import('node:child_process')
  const { readFileSync } = await import('node:fs')
  // the busy child outlives nothing: it exits while its parent (now `sleep`, which never waits) holds it as a zombie
  const parent = spawn('sh', ['-c', 'i=0; (while [ $i -lt 300000 ]; do i=$((i+1)); done) & exec sleep 20'], { stdio: 'ignore' })
  t.teardown(() => { parent.kill('SIGKILL') })
  const pid = parent.pid as number
  const zombie = (): boolean => zombieChildren(pid).length > 0
  const deadline = Date.now() + 20_000
  while (!zombie() && Date.now() < deadline) await new Promise((resolve) => setTimeout(resolve, 50))
  t.ok(zombie(), 'the busy child is a zombie')
  const own = parseStatCpuTicks(readFileSync(`/proc/${pid}/stat`, 'utf8')) * 1000 / CLOCK_TICKS_PER_S
  const cpu = procStats([pid]).cpuMs
  t.ok(cpu - own >= 50, `the zombie's CPU counts: ${cpu} ms in all, ${own} ms the parent's own`)
})

t.test('a CPU profile is summarised as self time per function, heaviest first', async t => {
  const hot = hotFunctions({
    startTime: 0,
    endTime: 1_000_000,
    nodes: [
      { id: 1, callFrame: { functionName: '(root)', url: '', lineNumber: -1 }, hitCount: 0 },
      { id: 2, callFrame: { functionName: 'pipe', url: 'file:///work/main/dist/src/proxy/pipe.js', lineNumber: 9 }, hitCount: 30 },
      { id: 3, callFrame: { functionName: '', url: 'node:net', lineNumber: 0 }, hitCount: 70 }
    ]
  })
  t.same(hot.map((h) => [h.name, h.where, Math.round(h.selfMs), Math.round(h.selfPct)]), [
    ['(anonymous)', 'node:net:1', 700, 70],
    ['pipe', 'dist/src/proxy/pipe.js:10', 300, 30]
  ])
})

t.test('the ACL bench rules are valid EGRESS_HTTP_PROXY_DESTINATION text of the asked size', async t => {
  const parsed = parseHttpAcl(aclText(1000))
  t.ok(parsed.ok)
  if (parsed.ok) {
    t.equal(parsed.value.length, 1000)
    t.equal(parsed.value.filter((r) => r.action === 'deny').length, 100)
  }
})

t.test('every group compares scenarios the bench runs; the two-core group pits EGRESS_WORKERS=2 against two haproxy threads', async t => {
  const { SCENARIOS, daemonEnv } = await import('../../../bench/scenarios.js')
  const { haproxyConf } = await import('../../../bench/peer-configs.js')
  for (const g of GROUPS) {
    for (const id of [g.subject, ...g.peers]) t.ok((SCENARIOS as readonly string[]).includes(id), `${g.id}: ${id} is a scenario`)
    for (const target of g.targets) t.ok(target.peer === undefined || g.peers.includes(target.peer), `${g.id}: the target's peer ${String(target.peer)} is in the group`)
  }
  const two = GROUPS.find((g) => g.id === 'dns-proxy-2-cores')
  t.same([two?.subject, two?.peers, two?.targets.map((x) => x.metric)], ['dns-proxy-2w', ['haproxy-2t'], ['tcp1', 'tcp4', 'connPerSec']])
  const fw = [{ listen: '198.51.100.1', port: 80, target: '203.0.113.10', targetPort: 80 }]
  t.match(haproxyConf(fw, 1000), /\n {2}nbthread 1\n/)
  t.match(haproxyConf(fw, 1000, 2), /\n {2}nbthread 2\n/)
  t.equal(daemonEnv('dns-proxy').EGRESS_WORKERS, undefined, 'the one-core daemon runs without workers')
})

t.test('the plain Node forwarder gets every forward on one command line, from the source address', async t => {
  const { nodeForwardArgv } = await import('../../../bench/peer-configs.js')
  const fw = [
    { listen: '198.51.100.1', port: 80, target: '203.0.113.10', targetPort: 80 },
    { listen: '198.51.100.1', port: 5201, target: '203.0.113.10', targetPort: 5202 }
  ]
  t.same(nodeForwardArgv('/usr/bin/node', '/b/node-forward.js', '192.0.2.99', fw),
    ['/usr/bin/node', '/b/node-forward.js', '198.51.100.1', '192.0.2.99', '80=203.0.113.10:80', '5201=203.0.113.10:5202'])
  t.throws(() => nodeForwardArgv('node', 'f.js', '192.0.2.99', []), /same listen address/)
  t.throws(() => nodeForwardArgv('node', 'f.js', '192.0.2.99', [fw[0] as typeof fw[number], { ...fw[1] as typeof fw[number], listen: '198.51.100.9' }]), /same listen address/)
})

t.test('receive steering masks: one bit per CPU of the taskset list', async t => {
  const { rpsMask } = await import('../../../bench/scenarios.js')
  t.equal(rpsMask(0), '1')
  t.equal(rpsMask(1), '2')
  t.equal(rpsMask('0,1'), '3')
  t.equal(rpsMask('1,3'), 'a')
})
