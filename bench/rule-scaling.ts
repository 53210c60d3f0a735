/**
 * Setup and reconcile cost against the size of EGRESS_DESTINATION (1, 100, 1,000 rules): parse and
 * plan time in process (pure, with fake host facts), and the real nft transaction — the first apply
 * (create), a re-apply (what a reload or a repair does), and the reconcile check (`nft -j list table`
 * plus the fingerprint). Runs as a child inside a bench router namespace, as the daemon would:
 * `ip netns exec NS node dist/bench/rule-scaling.js '{"sizes":[1,100,1000],"runs":3}'`; prints JSON.
 */
import { readFileSync } from 'node:fs'
import { pathToFileURL } from 'node:url'
import { parseConfig } from '../src/config/config.js'
import { readRawSettings } from '../src/config/env.js'
import type { Config } from '../src/config/types.js'
import { fingerprint } from '../src/nft/drift.js'
import { createNftRunner } from '../src/nft/runner.js'
import { buildPlan } from '../src/plan/plan.js'
import type { HostFacts } from '../src/plan/types.js'
import { median } from './report.js'

export interface RuleScalingRow {
  rules: number
  parseUs: number
  planUs: number
  scriptBytes: number
  applyCreateMs: number
  applyReplaceMs: number
  reconcileCheckMs: number
}

/** n redirect rules: local ports 10000.. to the destination's port 80. */
export function destinationWithRules (n: number, dest: string): string {
  return Array.from({ length: n }, (_, i) => `${10_000 + i} tcp ${dest} 80`).join('\n') + '\n'
}

export const FAKE_FACTS: HostFacts = { parent: 'lan0', macvlanExists: false, podAddresses: [{ address: '198.51.100.1', family: 4 }] }

function configFor (n: number): Config {
  const env = {
    EGRESS_ROUTER_MODE: 'redirect',
    EGRESS_SOURCE: '192.0.2.99/24',
    EGRESS_GATEWAY: '192.0.2.1',
    EGRESS_INTERFACE: 'lan0',
    EGRESS_POD_INTERFACE: 'eth0',
    EGRESS_DESTINATION: destinationWithRules(n, '203.0.113.10')
  }
  const raw = readRawSettings(env, {}, (p) => readFileSync(p, 'utf8'))
  if ('issues' in raw) throw new Error(JSON.stringify(raw.issues))
  const parsed = parseConfig(raw.settings)
  if (!parsed.ok) throw new Error(JSON.stringify(parsed.issues))
  return parsed.config
}

/** Median µs of fn over up to 2,000 calls or 500 ms, whichever comes first (after a warm-up call). */
export function timeUs (fn: () => void): number {
  fn()
  const samples: number[] = []
  const end = performance.now() + 500
  for (let i = 0; i < 2000 && performance.now() < end; i++) {
    const t = performance.now()
    fn()
    samples.push((performance.now() - t) * 1000)
  }
  return median(samples)
}

export async function measureRules (sizes: readonly number[], runs: number): Promise<RuleScalingRow[]> {
  const nft = createNftRunner()
  const rows: RuleScalingRow[] = []
  for (const n of sizes) {
    const parseUs = timeUs(() => { configFor(n) })
    const config = configFor(n)
    const planUs = timeUs(() => { buildPlan(config, FAKE_FACTS) })
    const plan = buildPlan(config, FAKE_FACTS)
    const create: number[] = []
    const replace: number[] = []
    const check: number[] = []
    for (let r = 0; r < runs; r++) {
      await nft.deleteTable(plan.nft.family, plan.nft.table)
      let t = performance.now()
      await nft.apply(plan.nft.script)
      create.push(performance.now() - t)
      t = performance.now()
      await nft.apply(plan.nft.script)
      replace.push(performance.now() - t)
      t = performance.now()
      const listing = await nft.listTable(plan.nft.family, plan.nft.table)
      fingerprint(listing)
      check.push(performance.now() - t)
    }
    await nft.deleteTable(plan.nft.family, plan.nft.table)
    rows.push({
      rules: n,
      parseUs,
      planUs,
      scriptBytes: Buffer.byteLength(plan.nft.script),
      applyCreateMs: median(create),
      applyReplaceMs: median(replace),
      reconcileCheckMs: median(check)
    })
  }
  return rows
}

if (import.meta.url === pathToFileURL(process.argv[1] ?? '').href) {
  const args = JSON.parse(process.argv[2] ?? '{}') as { sizes?: number[], runs?: number }
  measureRules(args.sizes ?? [1, 100, 1000], args.runs ?? 3).then((rows) => {
    process.stdout.write(JSON.stringify(rows) + '\n')
  }, (err: unknown) => {
    process.stderr.write(`rule-scaling: ${err instanceof Error ? err.stack ?? err.message : String(err)}\n`)
    process.exit(1)
  })
}
