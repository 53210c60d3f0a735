/**
 * `egress-router plan`: validate, read the host facts (reads only), print the plan. Changes nothing.
 */
import { availableParallelism } from 'node:os'
import { resolveWorkers } from '../config/config.js'
import type { Config } from '../config/types.js'
import { gatherFacts } from '../apply/facts.js'
import { NetlinkHandle } from '../netlink/handle.js'
import { buildPlan, formatKernelForwards, formatPlan } from '../plan/plan.js'
import type { HostFacts } from '../plan/types.js'

export async function planCommand (config: Config, opts: { json: boolean }): Promise<number> {
  let facts: HostFacts
  try {
    const nl = NetlinkHandle.open()
    try {
      facts = await gatherFacts(config, nl)
    } finally {
      nl.close()
    }
  } catch (err) {
    process.stderr.write(`egress-router plan: cannot read the host's links and routes: ${err instanceof Error ? err.message : String(err)}\n`)
    return 1
  }
  let plan
  try {
    plan = buildPlan(config, facts)
  } catch (err) {
    process.stderr.write(`egress-router plan: ${err instanceof Error ? err.message : String(err)}\n`)
    return 2
  }
  const cpus = availableParallelism()
  const workers = resolveWorkers(config, cpus)
  if (opts.json) {
    process.stdout.write(JSON.stringify({ config, facts, plan, workers }, null, 2) + '\n')
  } else {
    const auto = config.workers === 'auto' ? ` (auto: one per CPU, ${cpus} here)` : ''
    process.stdout.write(formatPlan(plan) + formatKernelForwards(config) + (workers > 1 || auto !== '' ? `workers: ${workers}${auto}, forked by the daemon; it keeps the rules and the health listener\n` : ''))
  }
  return 0
}
