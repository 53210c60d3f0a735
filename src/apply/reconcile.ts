/**
 * Self-healing: every interval, compare the kernel with the plan — our nft table (by fingerprint of
 * `nft -j list table`) and the network (address, routes, rules, link up) — log what drifted, and restore it.
 * One check at a time; a failed repair is logged and tried again on the next tick. Checks and applies (a reload's
 * applyRules) never overlap: a check that listed the table just before a reload applied new rules would otherwise
 * take the new rules for drift and "repair" them back to the old plan.
 */
import type { Logger } from 'pino'
import type { Metrics } from '../observe/metrics.js'
import type { NftListing, NftRunner } from '../nft/runner.js'
import { describeDrift, fingerprint } from '../nft/drift.js'
import type { Rtnl } from '../netlink/types.js'
import { diffNetwork, repairNetwork } from './network.js'
import type { Plan } from '../plan/types.js'

export interface ReconcilerOptions {
  plan: Plan
  nl: Rtnl
  nft: NftRunner
  logger: Logger
  metrics: Metrics
  intervalMs?: number
}

export class Reconciler {
  #plan: Plan
  readonly #opts: ReconcilerOptions
  #expected: string | null = null
  #expectedJson: NftListing | null = null
  #timer: NodeJS.Timeout | null = null
  #running: Promise<void> | null = null
  /** tail of the queue that serialises checks and applies */
  #queue: Promise<unknown> = Promise.resolve()

  constructor (opts: ReconcilerOptions) {
    this.#opts = opts
    this.#plan = opts.plan
  }

  get plan (): Plan { return this.#plan }

  /** Applies the plan's nft script (one transaction) and remembers what the kernel made of it. */
  async applyRules (plan: Plan = this.#plan): Promise<string> {
    return await this.#exclusive(async () => await this.#apply(plan))
  }

  #exclusive<T> (fn: () => Promise<T>): Promise<T> {
    const run = this.#queue.then(fn)
    this.#queue = run.catch(() => undefined)
    return run
  }

  async #apply (plan: Plan): Promise<string> {
    this.#plan = plan
    await this.#opts.nft.apply(plan.nft.script)
    const json = await this.#opts.nft.listTable(plan.nft.family, plan.nft.table)
    this.#expectedJson = json
    this.#expected = fingerprint(json)
    return this.#expected
  }

  start (): void {
    if (this.#timer !== null) return
    this.#timer = setInterval(() => { void this.tick() }, this.#opts.intervalMs ?? 1000)
  }

  async stop (): Promise<void> {
    if (this.#timer !== null) clearInterval(this.#timer)
    this.#timer = null
    await this.#running
  }

  /** One check; concurrent calls share the one running. */
  async tick (): Promise<void> {
    if (this.#running !== null) return await this.#running
    this.#running = this.#exclusive(async () => { await this.#check() }).finally(() => { this.#running = null })
    return await this.#running
  }

  async #check (): Promise<void> {
    const { nft, nl, logger, metrics } = this.#opts
    const plan = this.#plan
    metrics.reconcileRuns.inc({ what: 'nft' })
    try {
      const json = await nft.listTable(plan.nft.family, plan.nft.table)
      const actual = json === null ? null : fingerprint(json)
      if (actual !== this.#expected) {
        const drift = describeDrift(this.#expectedJson, json)
        logger.warn({ event: 'drift', what: 'nft', table: `${plan.nft.family} ${plan.nft.table}`, drift }, 'nft rules drifted; restoring them')
        await this.#apply(plan)
        metrics.reconcileRepairs.inc({ what: 'nft' })
        logger.info({ event: 'repaired', what: 'nft' }, 'nft rules restored')
      }
    } catch (err) {
      logger.error({ event: 'repair-failed', what: 'nft', err }, 'could not restore the nft rules; retrying')
    }
    metrics.reconcileRuns.inc({ what: 'network' })
    try {
      const drifts = await diffNetwork(plan.network, nl)
      if (drifts.length > 0) {
        logger.warn({ event: 'drift', what: 'network', drift: drifts.map((d) => d.description) }, 'network state drifted; restoring it')
        await repairNetwork(plan.network, nl, drifts)
        metrics.reconcileRepairs.inc({ what: 'network' }, drifts.length)
        logger.info({ event: 'repaired', what: 'network' }, 'network state restored')
      }
    } catch (err) {
      logger.error({ event: 'repair-failed', what: 'network', err }, 'could not restore the network state; retrying')
    }
  }
}
