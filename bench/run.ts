/**
 * `npm run bench`: egress-router side by side with its peers on the lab's namespace topology — redirect
 * vs hand-written nft (the kernel floor), http-proxy vs squid and tinyproxy, dns-proxy vs haproxy and
 * socat — plus the scaling curves (idle tunnels, EGRESS_DESTINATION size, ACL size). Prints Markdown
 * tables and writes the raw figures to bench/results/<timestamp>.json. Root only; see bench/README.md.
 *
 *   node dist/bench/run.js [--quick] [--runs N] [--seconds S] [--only a,b] [--no-pin] [--no-rps] [--profile] [--skip-scaling]
 */
import { mkdirSync, readdirSync, readFileSync, writeFileSync, mkdtempSync, rmSync } from 'node:fs'
import { cpus, tmpdir, release } from 'node:os'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { run } from '../src/lab/exec.js'
import { startRouter } from '../src/lab/router-process.js'
import { buildTopology, sweepStale, type Topology } from '../src/lab/topology.js'
import { measureAcl, type AclCostRow } from './acl-cost.js'
import { hotFunctions, type CpuProfile, type HotFunction } from './cpu-profile.js'
import { GROUPS, median, renderGroupTable, renderProblems, renderTable, formatNumber, type ScenarioResult } from './report.js'
import { destinationWithRules, type RuleScalingRow } from './rule-scaling.js'
import { daemonEnv, newResult, runScenario, SCENARIOS, NS_PREFIX, type BenchOptions, type ScenarioId } from './scenarios.js'
import { ensureTools, stopSystemServices, toolVersions } from './tools.js'

const RESULTS_DIR = fileURLToPath(new URL('../../bench/results/', import.meta.url))
const RULE_SCALING = fileURLToPath(new URL('./rule-scaling.js', import.meta.url))

export interface CliOptions {
  quick: boolean
  runs: number
  seconds: number
  only: ScenarioId[]
  pin: boolean
  steer: boolean
  profile: boolean
  scaling: boolean
}

export function parseArgs (argv: readonly string[]): CliOptions {
  const quick = argv.includes('--quick')
  const value = (name: string): string | undefined => {
    const i = argv.indexOf(name)
    return i === -1 ? undefined : argv[i + 1]
  }
  const only = (value('--only') ?? '').split(',').filter((s) => s !== '')
  for (const s of only) if (!(SCENARIOS as readonly string[]).includes(s)) throw new Error(`--only: unknown scenario '${s}' (${SCENARIOS.join(', ')})`)
  const num = (name: string, def: number): number => {
    const v = value(name)
    if (v === undefined) return def
    const n = Number(v)
    if (!Number.isInteger(n) || n < 1 || n > 100) throw new Error(`${name}: a whole number from 1 to 100`)
    return n
  }
  return {
    quick,
    runs: num('--runs', quick ? 1 : 3),
    seconds: num('--seconds', quick ? 2 : 5),
    only: only.length === 0 ? [...SCENARIOS] : only as ScenarioId[],
    pin: !argv.includes('--no-pin') && cpus().length >= 2,
    steer: !argv.includes('--no-rps'),
    profile: argv.includes('--profile'),
    scaling: !argv.includes('--skip-scaling')
  }
}

interface SetupRow { rules: number, setupMs: number, readyMs: number, runs: number }

/** Starts the daemon (redirect) with n rules, `runs` times, from a clean namespace each time. */
async function daemonSetupCurve (topo: Topology, sizes: readonly number[], runs: number, say: (l: string) => void): Promise<SetupRow[]> {
  const rows: SetupRow[] = []
  for (const n of sizes) {
    const setup: number[] = []
    const ready: number[] = []
    const env = daemonEnv('redirect', { EGRESS_DESTINATION: destinationWithRules(n, '203.0.113.10') })
    for (let r = 0; r < runs; r++) {
      const spawned = Date.now()
      const router = startRouter(topo, env)
      try {
        await router.waitReady(30_000)
        const rules = router.logs.find((l) => l.event === 'rules')
        const rd = router.logs.find((l) => l.event === 'readiness' && l.ready === true)
        if (typeof rules?.setupMs === 'number') setup.push(rules.setupMs)
        if (typeof rd?.time === 'number') ready.push(rd.time - spawned)
      } catch (err) {
        say(`bench:   daemon with ${n} rules: ${err instanceof Error ? err.message.slice(0, 300) : String(err)}`)
      } finally {
        await router.stop('SIGTERM', 10_000)
      }
      // back to a bare namespace, so every start creates the macvlan and the table afresh
      const cleanup = startRouter(topo, env, { args: ['cleanup'] })
      const timer = setTimeout(() => { void cleanup.stop('SIGKILL', 1_000) }, 20_000)
      await cleanup.exited
      clearTimeout(timer)
    }
    rows.push({ rules: n, setupMs: median(setup), readyMs: median(ready), runs: setup.length })
  }
  return rows
}

interface Scaling {
  setup?: SetupRow[]
  nft?: RuleScalingRow[]
  acl?: AclCostRow[]
  errors: string[]
}

async function scalingCurves (o: CliOptions, say: (l: string) => void): Promise<Scaling> {
  const out: Scaling = { errors: [] }
  const sizes = [1, 100, 1000]
  const runs = o.runs
  try {
    say('bench: ACL decision cost (in process)')
    out.acl = measureAcl([10, 1000, 10_000])
  } catch (err) { out.errors.push(`acl: ${String(err)}`) }
  let topo: Topology | null = null
  try {
    topo = await buildTopology({ prefix: NS_PREFIX })
    say('bench: nft transaction and plan time against EGRESS_DESTINATION size')
    const r = await topo.exec('router', [process.execPath, RULE_SCALING, JSON.stringify({ sizes, runs: Math.max(runs, 3) })], { timeoutMs: 120_000 })
    if (r.code !== 0) out.errors.push(`rule-scaling: ${r.stderr.trim().slice(0, 400)}`)
    else out.nft = JSON.parse(r.stdout) as RuleScalingRow[]
    say('bench: daemon start to rules in place, against EGRESS_DESTINATION size')
    out.setup = await daemonSetupCurve(topo, sizes, runs, say)
  } catch (err) {
    out.errors.push(`scaling: ${err instanceof Error ? err.message : String(err)}`)
  } finally {
    if (topo !== null) await topo.destroy().catch(() => {})
  }
  return out
}

function renderScaling (s: Scaling): string[] {
  const lines: string[] = []
  if (s.setup !== undefined) {
    lines.push('### Daemon start → rules in place (redirect), by EGRESS_DESTINATION size', '')
    lines.push(renderTable(['rules', 'rules in place after process start (ms)', 'ready (ms, from spawn)', 'runs'],
      s.setup.map((r) => [String(r.rules), formatNumber(r.setupMs, 0), formatNumber(r.readyMs, 0), String(r.runs)])), '')
  }
  if (s.nft !== undefined) {
    lines.push('### Plan and nft transaction time, by EGRESS_DESTINATION size', '')
    lines.push(renderTable(['rules', 'parse (µs)', 'plan (µs)', 'script (bytes)', 'nft apply, new table (ms)', 'nft apply, replace (ms)', 'reconcile check (ms)'],
      s.nft.map((r) => [String(r.rules), formatNumber(r.parseUs, 0), formatNumber(r.planUs, 0), String(r.scriptBytes),
        formatNumber(r.applyCreateMs, 1), formatNumber(r.applyReplaceMs, 1), formatNumber(r.reconcileCheckMs, 1)])), '')
  }
  if (s.acl !== undefined) {
    lines.push('### http-proxy ACL decision cost, by rule count', '')
    lines.push(renderTable(['rules', 'compile (ms)', 'exact host (ns)', '*.domain (ns)', 'CIDR (ns)', 'miss → default deny (ns)'],
      s.acl.map((r) => [String(r.rules), formatNumber(r.compileMs, 2), formatNumber(r.exactNs, 0), formatNumber(r.suffixNs, 0),
        formatNumber(r.cidrNs, 0), formatNumber(r.missNs, 0)])), '')
  }
  for (const e of s.errors) lines.push(`- ${e}`)
  return lines
}

function summariseProfiles (dir: string): Record<string, HotFunction[]> {
  const out: Record<string, HotFunction[]> = {}
  for (const f of readdirSync(dir).filter((x) => x.endsWith('.cpuprofile'))) {
    try {
      out[f] = hotFunctions(JSON.parse(readFileSync(join(dir, f), 'utf8')) as CpuProfile, 20)
    } catch { /* a profile cut short */ }
  }
  return out
}

async function main (): Promise<number> {
  const say = (l: string): void => { process.stderr.write(l + '\n') }
  let o: CliOptions
  try {
    o = parseArgs(process.argv.slice(2))
  } catch (err) {
    say(`bench: ${err instanceof Error ? err.message : String(err)}`)
    return 2
  }
  if (typeof process.getuid === 'function' && process.getuid() !== 0) {
    say('bench: needs root (it builds network namespaces and runs the router in one)')
    return 1
  }
  const startedAt = new Date()
  // 10,000 tunnels through a proxy is 20,000+ descriptors: raise ours (every child inherits it) where
  // the container allows it, and learn what the limit is
  await run(['prlimit', `--pid=${process.pid}`, '--nofile=65536:65536'], { timeoutMs: 5_000 })
  const limit = await run(['prlimit', `--pid=${process.pid}`, '--nofile', '--noheadings', '--output=HARD'], { timeoutMs: 5_000 })
  const fdLimit = Number(limit.stdout.trim()) > 0 ? Number(limit.stdout.trim()) : 20_000
  const installed = await ensureTools(say)
  await stopSystemServices(say)
  const swept = await sweepStale(NS_PREFIX)
  if (swept.length > 0) say(`bench: removed stale namespaces ${swept.join(', ')}`)

  const profileDir = o.profile ? mkdtempSync(join(tmpdir(), 'erbench-prof-')) : undefined
  const bo: BenchOptions = {
    runs: o.runs,
    seconds: o.seconds,
    wrkConnections: 50,
    maxIdle: o.quick ? 1000 : 10_000,
    pin: { enabled: o.pin, steer: o.steer },
    say,
    profileDir,
    fdLimit
  }
  say(`bench: ${o.quick ? 'quick' : 'full'} run: ${o.runs} run(s) of ${o.seconds} s per workload; scenarios ${o.only.join(', ')}; pinning ${o.pin ? 'router → CPU 1, load and destination → CPU 0' : 'off'}`)

  // Rounds: one run of every scenario, then the next round. Each round starts every router afresh (and warms it
  // up): a drift in the host's speed then slows all the scenarios of a round, not all the runs of one.
  const results = new Map<string, ScenarioResult>(o.only.map((id) => [id, newResult(id)]))
  for (let r = 1; r <= o.runs; r++) {
    for (const id of o.only) {
      await runScenario(id, { ...bo, runs: 1 }, { result: results.get(id), idle: r === 1, label: `round ${r}/${o.runs}` })
    }
  }
  const scaling = o.scaling ? await scalingCurves(o, say) : { errors: [] }
  const profiles = profileDir === undefined ? undefined : summariseProfiles(profileDir)
  if (profileDir !== undefined) rmSync(profileDir, { recursive: true, force: true })
  await stopSystemServices(say)

  const md: string[] = [`## egress-router bench — ${startedAt.toISOString()} (${o.quick ? 'quick: 1 run, short' : `median of ${o.runs} runs, in interleaved rounds`}, ${o.seconds} s per workload)`, '']
  md.push(`Machine: ${cpus().length} × ${cpus()[0]?.model ?? '?'}, Linux ${release()}. Pinning: ${o.pin ? 'router on CPU 1 (the -2w/-2t variants on CPUs 0 and 1); wrk, iperf3, the CONNECT shim and the destination on CPU 0' : 'none'}${o.pin ? (o.steer ? '; received packets processed on the receiving namespace\'s CPU (RPS)' : '; no receive steering (--no-rps)') : ''}.`)
  md.push(`Ratios are egress-router ÷ peer (for ms and MiB, lower is better). Descriptor limit ${fdLimit}.`, '')
  for (const g of GROUPS) {
    if (![g.subject, ...g.peers].some((id) => results.has(id))) continue
    md.push(`### ${g.subject} vs ${g.peers.join(', ')}`, '', renderGroupTable(g, results), '')
    const problems = renderProblems(g, results)
    if (problems.length > 0) md.push(...problems, '')
  }
  md.push(...renderScaling(scaling))
  if (profiles !== undefined) {
    for (const [file, hot] of Object.entries(profiles)) {
      md.push(`### CPU profile ${file} (self time)`, '', renderTable(['function', 'where', 'self ms', '%'],
        hot.map((h) => [h.name, h.where, h.selfMs.toFixed(0), h.selfPct.toFixed(1)]), 2), '')
    }
  }
  process.stdout.write(md.join('\n') + '\n')

  mkdirSync(RESULTS_DIR, { recursive: true })
  const file = join(RESULTS_DIR, `${startedAt.toISOString().replace(/[:.]/g, '-')}.json`)
  writeFileSync(file, JSON.stringify({
    startedAt: startedAt.toISOString(),
    finishedAt: new Date().toISOString(),
    options: o,
    machine: { cpus: cpus().length, model: cpus()[0]?.model, kernel: release(), node: process.version },
    tools: await toolVersions(),
    installed,
    scenarios: Object.fromEntries([...results].map(([id, r]) => [id, {
      ...r,
      medians: Object.fromEntries(Object.entries(r.samples).map(([m, v]) => [m, median(v)]))
    }])),
    scaling,
    profiles,
    markdown: md.join('\n')
  }, (_k, v: unknown) => typeof v === 'number' && !Number.isFinite(v) ? null : v, 2) + '\n')
  say(`bench: wrote ${file}`)
  return [...results.values()].every((r) => r.ok) ? 0 : 1
}

if (import.meta.url === `file://${process.argv[1] ?? ''}`) {
  main().then((code) => { process.exitCode = code }, (err: unknown) => {
    process.stderr.write(`bench: ${err instanceof Error ? err.stack ?? err.message : String(err)}\n`)
    process.exitCode = 1
  })
}
