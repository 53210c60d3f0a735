/**
 * The pure half of the benchmark: parsing what wrk and iperf3 print, medians, ratios against the
 * peers, the targets of the performance issue, and the Markdown tables. No I/O here, so every
 * figure the report prints can be unit-tested from captured tool output.
 */

// ---- statistics -------------------------------------------------------------------------------

/** Median of the finite values; NaN when there is none. An even count averages the middle two. */
export function median (values: readonly number[]): number {
  const v = values.filter((x) => Number.isFinite(x)).sort((a, b) => a - b)
  if (v.length === 0) return Number.NaN
  const mid = v.length >> 1
  return v.length % 2 === 1 ? v[mid] as number : ((v[mid - 1] as number) + (v[mid] as number)) / 2
}

/** subject ÷ peer; NaN when either is missing or the peer is 0. */
export function ratio (subject: number, peer: number): number {
  if (!Number.isFinite(subject) || !Number.isFinite(peer) || peer === 0) return Number.NaN
  return subject / peer
}

// ---- wrk --------------------------------------------------------------------------------------

export interface WrkResult {
  requests: number
  durationS: number
  /** requests (completed responses) per second */
  rps: number
  p50Ms: number
  p99Ms: number
  /** connect + read + write + timeout socket errors */
  socketErrors: number
  /** responses that were not 2xx/3xx */
  badStatus: number
}

/** The line bench/wrk.lua's done() prints; a prefix no wrk output line has. */
export const WRK_JSON_MARK = 'BENCH-WRK '

/**
 * Parses wrk's output. Prefers the JSON line of bench's done() hook (exact counts, latency in µs);
 * falls back on wrk's own text (`Requests/sec:`, `Latency Distribution`), so a run without the
 * hook still yields figures. Returns null when neither is there.
 */
export function parseWrk (text: string): WrkResult | null {
  const line = text.split('\n').find((l) => l.startsWith(WRK_JSON_MARK))
  if (line !== undefined) {
    try {
      const j = JSON.parse(line.slice(WRK_JSON_MARK.length)) as Record<string, number>
      const durationS = (j.duration_us ?? 0) / 1e6
      const requests = j.requests ?? 0
      return {
        requests,
        durationS,
        rps: durationS > 0 ? requests / durationS : Number.NaN,
        p50Ms: (j.p50_us ?? Number.NaN) / 1000,
        p99Ms: (j.p99_us ?? Number.NaN) / 1000,
        socketErrors: (j.connect ?? 0) + (j.read ?? 0) + (j.write ?? 0) + (j.timeout ?? 0),
        badStatus: j.status ?? 0
      }
    } catch { /* fall through to the text */ }
  }
  return parseWrkText(text)
}

const UNIT_MS: Readonly<Record<string, number>> = { us: 0.001, ms: 1, s: 1000, m: 60_000 }
const UNIT_S: Readonly<Record<string, number>> = { ms: 0.001, s: 1, m: 60, h: 3600 }

function wrkDuration (text: string, table: Readonly<Record<string, number>>): number {
  const m = /^([\d.]+)(us|ms|s|m|h)$/.exec(text.trim())
  if (m === null) return Number.NaN
  const f = table[m[2] as string]
  return f === undefined ? Number.NaN : Number(m[1]) * f
}

/** wrk's text report (with --latency for the percentiles). */
export function parseWrkText (text: string): WrkResult | null {
  const total = /(\d+) requests in ([\d.]+\w+),/.exec(text)
  const rps = /^Requests\/sec:\s+([\d.]+)/m.exec(text)
  if (total === null || rps === null) return null
  const pct = (p: string): number => {
    const m = new RegExp(`^\\s+${p}%\\s+(\\S+)`, 'm').exec(text)
    return m === null ? Number.NaN : wrkDuration(m[1] as string, UNIT_MS)
  }
  const sock = /Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)/.exec(text)
  const bad = /Non-2xx or 3xx responses: (\d+)/.exec(text)
  return {
    requests: Number(total[1]),
    durationS: wrkDuration(total[2] as string, UNIT_S),
    rps: Number(rps[1]),
    p50Ms: pct('50'),
    p99Ms: pct('99'),
    socketErrors: sock === null ? 0 : sock.slice(1).reduce((a, b) => a + Number(b), 0),
    badStatus: bad === null ? 0 : Number(bad[1])
  }
}

// ---- iperf3 -----------------------------------------------------------------------------------

export interface IperfResult {
  /** what the receiver got, in Gbit/s */
  gbps: number
  streams: number
  retransmits: number
}

/** Parses `iperf3 -J` output; throws with iperf3's own error text when the run failed. */
export function parseIperf3 (json: string): IperfResult {
  let j: {
    error?: string
    start?: { test_start?: { num_streams?: number } }
    end?: { sum_received?: { bits_per_second?: number }, sum_sent?: { retransmits?: number } }
  }
  try {
    j = JSON.parse(json) as typeof j
  } catch {
    throw new Error(`iperf3 printed no JSON: ${json.slice(0, 200)}`)
  }
  if (typeof j.error === 'string') throw new Error(`iperf3: ${j.error}`)
  const bps = j.end?.sum_received?.bits_per_second
  if (typeof bps !== 'number') throw new Error('iperf3: no end.sum_received in its report')
  return { gbps: bps / 1e9, streams: j.start?.test_start?.num_streams ?? 1, retransmits: j.end?.sum_sent?.retransmits ?? 0 }
}

// ---- metrics, groups and targets --------------------------------------------------------------

export interface MetricSpec {
  readonly id: string
  readonly label: string
  readonly unit: string
  readonly better: 'higher' | 'lower'
  readonly digits: number
}

export const METRICS: readonly MetricSpec[] = [
  { id: 'tcp1', label: 'bulk TCP, 1 stream', unit: 'Gbit/s', better: 'higher', digits: 2 },
  { id: 'tcp4', label: 'bulk TCP, 4 streams', unit: 'Gbit/s', better: 'higher', digits: 2 },
  { id: 'connPerSec', label: 'new connections (Connection: close)', unit: 'conn/s', better: 'higher', digits: 0 },
  { id: 'closeP50', label: 'p50, Connection: close', unit: 'ms', better: 'lower', digits: 2 },
  { id: 'closeP99', label: 'p99, Connection: close', unit: 'ms', better: 'lower', digits: 2 },
  { id: 'reqPerSec', label: 'requests, keep-alive', unit: 'req/s', better: 'higher', digits: 0 },
  { id: 'kaP50', label: 'p50, keep-alive', unit: 'ms', better: 'lower', digits: 2 },
  { id: 'kaP99', label: 'p99, keep-alive', unit: 'ms', better: 'lower', digits: 2 },
  { id: 'rssIdle', label: 'RSS, no connections', unit: 'MiB', better: 'lower', digits: 1 },
  { id: 'cpuIdle', label: 'CPU with no connections (5 s)', unit: '% of a core', better: 'lower', digits: 2 },
  { id: 'rss100', label: 'RSS, 100 idle tunnels', unit: 'MiB', better: 'lower', digits: 1 },
  { id: 'rss1k', label: 'RSS, 1,000 idle tunnels', unit: 'MiB', better: 'lower', digits: 1 },
  { id: 'rss10k', label: 'RSS, 10,000 idle tunnels (or the fd-limited top level)', unit: 'MiB', better: 'lower', digits: 1 },
  { id: 'rssAfterLoad', label: 'RSS after the traffic workloads, connections closed', unit: 'MiB', better: 'lower', digits: 1 },
  { id: 'kibPerConn1k', label: 'RSS per tunnel at 1,000', unit: 'KiB', better: 'lower', digits: 1 },
  { id: 'kibPerConn10k', label: 'RSS per tunnel at the top level', unit: 'KiB', better: 'lower', digits: 1 },
  { id: 'cpuUsPerConn1k', label: 'CPU per tunnel opened (to 1,000)', unit: 'µs', better: 'lower', digits: 0 },
  { id: 'cpuUsPerConn10k', label: 'CPU per tunnel opened (1,000→top level)', unit: 'µs', better: 'lower', digits: 0 },
  { id: 'setupMs', label: 'rules in place after process start', unit: 'ms', better: 'lower', digits: 0 },
  { id: 'readyMs', label: 'ready after process start', unit: 'ms', better: 'lower', digits: 0 }
]

export function metricSpec (id: string): MetricSpec {
  const m = METRICS.find((x) => x.id === id)
  if (m === undefined) throw new TypeError(`unknown metric '${id}'`)
  return m
}

/**
 * A target of the issue. `ratio-min`: subject ÷ peer ≥ value; `ratio-max`: subject ÷ peer ≤ value;
 * `max`: the subject's own figure ≤ value.
 */
export interface Target {
  readonly metric: string
  readonly kind: 'ratio-min' | 'ratio-max' | 'max'
  readonly value: number
  readonly peer?: string
}

export interface Group {
  readonly id: string
  /** the egress-router scenario */
  readonly subject: string
  readonly peers: readonly string[]
  readonly metrics: readonly string[]
  readonly targets: readonly Target[]
}

const TRAFFIC = ['tcp1', 'tcp4', 'connPerSec', 'closeP50', 'closeP99', 'reqPerSec', 'kaP50', 'kaP99']
const MEMORY = ['rssIdle', 'cpuIdle', 'rss100', 'rss1k', 'rss10k', 'rssAfterLoad', 'kibPerConn1k', 'kibPerConn10k', 'cpuUsPerConn1k', 'cpuUsPerConn10k']

/** The dns-proxy targets, against haproxy on as many cores as the forwarder: throughput and new connections/s ≥ 1×. */
function forwarderTargets (peer: string): Target[] {
  return (['tcp1', 'tcp4', 'connPerSec'] as const).map((metric) => ({ metric, kind: 'ratio-min', value: 1.0, peer }))
}

export const GROUPS: readonly Group[] = [
  {
    id: 'redirect',
    subject: 'redirect',
    peers: ['kernel-nft'],
    metrics: [...TRAFFIC, 'setupMs', 'readyMs'],
    targets: [
      { metric: 'tcp1', kind: 'ratio-min', value: 0.95, peer: 'kernel-nft' },
      { metric: 'tcp4', kind: 'ratio-min', value: 0.95, peer: 'kernel-nft' },
      { metric: 'connPerSec', kind: 'ratio-min', value: 0.95, peer: 'kernel-nft' },
      { metric: 'setupMs', kind: 'max', value: 150 }
    ]
  },
  {
    id: 'http-proxy',
    subject: 'http-proxy',
    peers: ['squid', 'tinyproxy', 'node-http-relay'],
    metrics: [...TRAFFIC, ...MEMORY, 'readyMs'],
    targets: [
      { metric: 'reqPerSec', kind: 'ratio-min', value: 1.2, peer: 'squid' },
      { metric: 'connPerSec', kind: 'ratio-min', value: 1.2, peer: 'squid' },
      { metric: 'tcp1', kind: 'ratio-min', value: 1.0, peer: 'squid' },
      { metric: 'tcp4', kind: 'ratio-min', value: 1.0, peer: 'squid' },
      { metric: 'kaP99', kind: 'ratio-max', value: 1.0, peer: 'squid' },
      { metric: 'closeP99', kind: 'ratio-max', value: 1.0, peer: 'squid' },
      { metric: 'rss1k', kind: 'ratio-max', value: 1.0, peer: 'squid' }
    ]
  },
  {
    id: 'dns-proxy',
    subject: 'dns-proxy',
    peers: ['haproxy', 'socat', 'node-forward'],
    metrics: [...TRAFFIC, ...MEMORY, 'readyMs'],
    targets: forwarderTargets('haproxy')
  },
  {
    // EGRESS_DNS_PROXY_FORWARDING=kernel: the same forwards as DNAT rules, against haproxy and the proxied forwards
    // (the forwarding is softirq work; receive steering puts it on the router's CPU, as redirect's)
    id: 'dns-proxy-kernel',
    subject: 'dns-proxy-kernel',
    peers: ['haproxy', 'dns-proxy'],
    metrics: [...TRAFFIC, 'setupMs', 'readyMs'],
    targets: forwarderTargets('haproxy')
  },
  {
    // both cores to the router (CPU 0 shared with the load): EGRESS_WORKERS=2 against two haproxy threads
    id: 'dns-proxy-2-cores',
    subject: 'dns-proxy-2w',
    peers: ['haproxy-2t'],
    metrics: [...TRAFFIC, 'rssIdle', 'rss1k', 'readyMs'],
    targets: forwarderTargets('haproxy-2t')
  },
  {
    // EGRESS_WORKERS=2 on both cores against the one-core run of http-proxy (squid -N is one process):
    // what the second worker adds, not a target
    id: 'http-proxy-2-cores',
    subject: 'http-proxy-2w',
    peers: ['http-proxy'],
    metrics: [...TRAFFIC, 'rssIdle', 'rss1k', 'readyMs'],
    targets: []
  }
]

/** One scenario's outcome: every run's value of each metric, or why it could not run. */
export interface ScenarioResult {
  readonly id: string
  ok: boolean
  error?: string
  /** metric id → the value of each run (NaN for a run that failed) */
  readonly samples: Record<string, number[]>
  /** per-metric failures: metric id → message */
  readonly failures: Record<string, string>
  readonly notes: string[]
}

export type TargetVerdict = 'met' | 'not met' | 'n/a'

export function judge (target: Target, subject: number, peer: number): TargetVerdict {
  if (target.kind === 'max') return Number.isFinite(subject) ? (subject <= target.value ? 'met' : 'not met') : 'n/a'
  const r = ratio(subject, peer)
  if (!Number.isFinite(r)) return 'n/a'
  return (target.kind === 'ratio-min' ? r >= target.value : r <= target.value) ? 'met' : 'not met'
}

export function describeTarget (t: Target): string {
  if (t.kind === 'max') return `≤ ${t.value} ${metricSpec(t.metric).unit}`
  return `${t.kind === 'ratio-min' ? '≥' : '≤'} ${t.value}× ${t.peer ?? ''}`.trim()
}

export function formatNumber (value: number, digits: number): string {
  if (!Number.isFinite(value)) return '—'
  return value.toLocaleString('en-US', { minimumFractionDigits: digits, maximumFractionDigits: digits })
}

export function formatRatio (r: number): string {
  return Number.isFinite(r) ? `${r.toFixed(2)}×` : '—'
}

function cell (results: ReadonlyMap<string, ScenarioResult>, scenario: string, metric: string): number {
  return median(results.get(scenario)?.samples[metric] ?? [])
}

/** The Markdown table of one group: each figure (median), its ratio to each peer, the targets. */
export function renderGroupTable (group: Group, results: ReadonlyMap<string, ScenarioResult>): string {
  const head = ['metric', 'unit', group.subject, ...group.peers, ...group.peers.map((p) => `÷ ${p}`), 'target', 'verdict']
  const lines = [`| ${head.join(' | ')} |`, `|${head.map((_, i) => i < 2 ? ' --- ' : ' ---: ').join('|')}|`]
  for (const id of group.metrics) {
    const spec = metricSpec(id)
    const subject = cell(results, group.subject, id)
    const peers = group.peers.map((p) => cell(results, p, id))
    const targets = group.targets.filter((t) => t.metric === id)
    const verdicts = targets.map((t) => judge(t, subject, t.peer === undefined ? Number.NaN : cell(results, t.peer, id)))
    const anyValue = [subject, ...peers].some((v) => Number.isFinite(v))
    if (!anyValue && targets.length === 0) continue
    lines.push(`| ${[
      spec.label,
      spec.unit,
      formatNumber(subject, spec.digits),
      ...peers.map((v) => formatNumber(v, spec.digits)),
      ...peers.map((v) => formatRatio(ratio(subject, v))),
      targets.map(describeTarget).join('; ') || '',
      verdicts.map((v) => v === 'met' ? '✅ met' : v === 'not met' ? '❌ not met' : 'n/a').join('; ')
    ].join(' | ')} |`)
  }
  return lines.join('\n')
}

/** The problems of the scenarios of a group, as Markdown bullet lines (empty when there are none). */
export function renderProblems (group: Group, results: ReadonlyMap<string, ScenarioResult>): string[] {
  const out: string[] = []
  for (const id of [group.subject, ...group.peers]) {
    const r = results.get(id)
    if (r === undefined) { out.push(`- ${id}: not run`); continue }
    if (r.error !== undefined) out.push(`- ${id}: FAILED: ${r.error}`)
    for (const [metric, why] of Object.entries(r.failures)) out.push(`- ${id} ${metric}: ${why}`)
    for (const note of r.notes) out.push(`- ${id}: ${note}`)
  }
  return out
}

/** A plain Markdown table from a header and rows of cells. */
export function renderTable (head: readonly string[], rows: ReadonlyArray<readonly string[]>, rightFrom = 1): string {
  const sep = head.map((_, i) => i < rightFrom ? ' --- ' : ' ---: ')
  return [`| ${head.join(' | ')} |`, `|${sep.join('|')}|`, ...rows.map((r) => `| ${r.join(' | ')} |`)].join('\n')
}
