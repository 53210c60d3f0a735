/**
 * Self-healing: compare the kernel with the plan — our nft table (by fingerprint of `nft -j list table`) and the
 * network (address, routes, rules, link up, sysctls) — log what drifted, and restore it. Each is read when the kernel
 * says it changed: the nft table on the netlink events `nft monitor` reads (nft/monitor.ts), the links, addresses,
 * routes and rules on rtnetlink's (netlink/events.ts). As a safety net, every interval the ruleset's generation is
 * compared (nft/generation.ts: one netlink request; the table is listed only when it moved) and the sysctls, which
 * send no events, are read; the network is read whole every `fullEveryTicks` intervals, and every interval while
 * its events are down (the table too, while the generation cannot be read). So an operator's `nft flush ruleset` or
 * `ip addr del` is repaired at once (the events' 50 ms debounce), without forking nft or dumping the routing tables
 * every second.
 * One check at a time; a failed repair is logged and tried again on the next tick. Checks and applies (a reload's
 * applyRules) never overlap: a check that listed the table just before a reload applied new rules would otherwise
 * take the new rules for drift and "repair" them back to the old plan.
 */
import type { Logger } from 'pino'
import { NftError } from '../errors.js'
import type { Metrics } from '../observe/metrics.js'
import type { NftListing, NftRunner } from '../nft/runner.js'
import { describeDrift, fingerprint } from '../nft/drift.js'
import { startNftMonitor, type NftMonitor } from '../nft/monitor.js'
import { openGenerationReader, type GenerationReader } from '../nft/generation.js'
import type { Rtnl } from '../netlink/types.js'
import { diffNetwork, diffSysctls, repairNetwork } from './network.js'
import { startNetworkEvents, type NetlinkEvents } from '../netlink/events.js'
import type { Plan } from '../plan/types.js'

/** What the reconciler keeps true: the nft part always; the network part once it is set up. */
export type ReconcilePlan = Pick<Plan, 'nft'> & Partial<Pick<Plan, 'network'>>

export interface ReconcilerOptions {
  plan: ReconcilePlan
  /** null until the network is set up: only the rules are checked then */
  nl?: Rtnl | null
  nft: NftRunner
  logger: Logger
  /** null until the metrics exist (they load after the rules are in place) */
  metrics?: Metrics | null
  intervalMs?: number
  /** read the network (and the nft table, if its generation cannot be read) every this many intervals even without a change event; default 5 */
  fullEveryTicks?: number
  /** subscribe to the kernel's nf_tables and rtnetlink change events (default true); tests with fakes turn it off */
  monitor?: boolean
  /** where the ruleset generation is read; default a netfilter netlink socket opened by start() (with the monitor) */
  generation?: GenerationReader
}

/** What a change-event monitor has said so far about its part of the kernel. */
interface EventState { up: boolean, dirty: boolean }

export class Reconciler {
  #plan: ReconcilePlan
  readonly #opts: ReconcilerOptions
  #nl: Rtnl | null
  #metrics: Metrics | null
  #monitor: NftMonitor | null = null
  /** the table's change events: up once they came, dirty when the ruleset changed (or may have) since it was compared */
  readonly #nftEvents: EventState = { up: false, dirty: true }
  #generation: GenerationReader | null = null
  /** the ruleset generation read just before our table was last listed; null: not known */
  #listedGeneration: number | null = null
  #netEvents: NetlinkEvents | null = null
  /** the same for the links, addresses, routes and rules */
  readonly #networkEvents: EventState = { up: false, dirty: true }
  #stopping = false
  #ticks = 0
  #expected: string | null = null
  #expectedJson: NftListing | null = null
  #timer: NodeJS.Timeout | null = null
  #running: Promise<void> | null = null
  /** tail of the queue that serialises checks and applies */
  #queue: Promise<unknown> = Promise.resolve()

  constructor (opts: ReconcilerOptions) {
    this.#opts = opts
    this.#plan = opts.plan
    this.#nl = opts.nl ?? null
    this.#metrics = opts.metrics ?? null
    this.#generation = opts.generation ?? null
  }

  get plan (): ReconcilePlan { return this.#plan }

  /** The network is set up and the metrics exist: check both from now on. */
  attach (deps: { plan: Plan, nl: Rtnl, metrics: Metrics }): void {
    this.#plan = deps.plan
    this.#nl = deps.nl
    this.#metrics = deps.metrics
  }

  /**
   * Applies the plan's nft script (one transaction) and remembers what the kernel made of it. `onApplied` runs
   * the moment the transaction is in, before the read-back (the start-up time is measured there).
   */
  async applyRules (plan: ReconcilePlan = this.#plan, onApplied?: () => void): Promise<string> {
    return await this.#exclusive(async () => await this.#apply(plan, onApplied))
  }

  #exclusive<T> (fn: () => Promise<T>): Promise<T> {
    const run = this.#queue.then(fn)
    this.#queue = run.catch(() => undefined)
    return run
  }

  async #apply (plan: ReconcilePlan, onApplied?: () => void): Promise<string> {
    this.#plan = plan
    await this.#opts.nft.apply(plan.nft.script)
    onApplied?.()
    // what a change event until now reported is in the listing below; one after it marks the table dirty again
    this.#nftEvents.dirty = false
    this.#listedGeneration = await this.#readGeneration()
    const json = await this.#opts.nft.listTable(plan.nft.family, plan.nft.table)
    this.#expectedJson = json
    this.#expected = fingerprint(json)
    return this.#expected
  }

  /** The ruleset generation, or null if it cannot be read (no reader, or the read failed). */
  async #readGeneration (): Promise<number | null> {
    if (this.#generation === null) return null
    try {
      return await this.#generation.read()
    } catch (err) {
      this.#opts.logger.debug({ event: 'nft-generation', err }, 'could not read the ruleset generation; listing the table instead')
      return null
    }
  }

  start (): void {
    if (this.#timer !== null) return
    this.#timer = setInterval(() => { void this.tick() }, this.#opts.intervalMs ?? 1000)
    if (this.#opts.monitor !== false && this.#generation === null) {
      void openGenerationReader().then((g) => {
        if (this.#timer === null) g.close(); else this.#generation = g
      }, (err: unknown) => {
        this.#opts.logger.warn({ event: 'nft-generation', err }, 'cannot read the ruleset generation; the table is listed every few seconds instead')
      })
    }
    if (this.#opts.monitor !== false) {
      this.#monitor = startNftMonitor(this.#onEvents(this.#nftEvents, 'nft-monitor', 'nft change events are down; checking the table every interval meanwhile'))
      this.#netEvents = startNetworkEvents(this.#onEvents(this.#networkEvents, 'network-monitor', 'network change events are down; reading the network every interval meanwhile'))
    }
  }

  /** A monitor's callbacks: a change marks its part dirty and checks now; an error, until the next change, every interval. */
  #onEvents (state: EventState, event: string, down: string): { onChange: () => void, onError: (err: Error) => void } {
    return {
      onChange: () => {
        state.up = true
        state.dirty = true
        void this.tick()
      },
      onError: (err) => {
        state.up = false
        state.dirty = true
        this.#opts.logger.warn({ event, err: err.message }, down)
      }
    }
  }

  /**
   * The process is stopping on SIGTERM / SIGINT; the rules are still kept true until stop() (the change events are
   * dropped: the table is listed every interval instead). A signal sent to the whole process group (Ctrl-C in a
   * terminal) reaches our nft children too: a check whose nft child was killed by a signal is not reported as a
   * failed repair.
   */
  stopping (): void {
    this.#stopping = true
    this.#monitor?.stop()
    this.#monitor = null
    this.#nftEvents.up = false
    this.#netEvents?.stop()
    this.#netEvents = null
    this.#networkEvents.up = false
  }

  async stop (): Promise<void> {
    if (this.#timer !== null) clearInterval(this.#timer)
    this.#timer = null
    this.#monitor?.stop()
    this.#monitor = null
    this.#netEvents?.stop()
    this.#netEvents = null
    await this.#running
    this.#generation?.close()
    this.#generation = null
  }

  /**
   * One check; concurrent calls share the one running. A change event during a check marks its part dirty again:
   * the check after it (the next tick, or the event's own) reads it.
   */
  async tick (): Promise<void> {
    if (this.#running !== null) return await this.#running
    this.#running = this.#exclusive(async () => { await this.#check() }).finally(() => { this.#running = null })
    return await this.#running
  }

  async #check (): Promise<void> {
    const { logger } = this.#opts
    const nl = this.#nl
    const metrics = this.#metrics
    const plan = this.#plan
    this.#ticks++
    const full = this.#ticks % (this.#opts.fullEveryTicks ?? 5) === 0
    metrics?.reconcileRuns.inc({ what: 'nft' })
    if (this.#nftEvents.dirty) {
      this.#nftEvents.dirty = false
      await this.#checkRules(plan)
    } else {
      const generation = await this.#readGeneration()
      const moved = generation === null ? null : generation !== this.#listedGeneration
      if (moved === true || (moved === null && (!this.#nftEvents.up || full))) await this.#checkRules(plan, generation)
    }
    if (nl === null || plan.network === undefined) return
    const network = plan.network
    // Cleared before the read: a change while it runs marks it again.
    const whole = this.#networkEvents.dirty || !this.#networkEvents.up || full
    this.#networkEvents.dirty = false
    metrics?.reconcileRuns.inc({ what: 'network' })
    try {
      const drifts = whole ? await diffNetwork(network, nl) : await diffSysctls(network)
      if (drifts.length > 0) {
        logger.warn({ event: 'drift', what: 'network', drift: drifts.map((d) => d.description) }, 'network state drifted; restoring it')
        await repairNetwork(network, nl, drifts)
        metrics?.reconcileRepairs.inc({ what: 'network' }, drifts.length)
        logger.info({ event: 'repaired', what: 'network' }, 'network state restored')
      }
    } catch (err) {
      // read the whole network again on the next tick, whatever the events say
      this.#networkEvents.dirty = true
      logger.error({ event: 'repair-failed', what: 'network', err }, 'could not restore the network state; retrying')
    }
  }

  /** Lists our table and repairs it if it drifted; `known` is a generation just read for this check (else it is read here). */
  async #checkRules (plan: ReconcilePlan, known?: number | null): Promise<void> {
    const { nft, logger } = this.#opts
    const metrics = this.#metrics
    try {
      const generation = known !== undefined ? known : await this.#readGeneration()
      const json = await nft.listTable(plan.nft.family, plan.nft.table)
      this.#listedGeneration = generation
      const actual = json === null ? null : fingerprint(json)
      if (actual !== this.#expected) {
        const drift = describeDrift(this.#expectedJson, json)
        logger.warn({ event: 'drift', what: 'nft', table: `${plan.nft.family} ${plan.nft.table}`, drift }, 'nft rules drifted; restoring them')
        await this.#apply(plan)
        metrics?.reconcileRepairs.inc({ what: 'nft' })
        logger.info({ event: 'repaired', what: 'nft' }, 'nft rules restored')
      }
    } catch (err) {
      // Stopping on a signal sent to the whole process group (Ctrl-C): the nft child of this check got it too.
      const killedWithUs = this.#stopping && err instanceof NftError && err.exitCode === null
      if (killedWithUs) logger.debug({ event: 'check-interrupted', what: 'nft', err }, 'nft check interrupted by the stop signal')
      else logger.error({ event: 'repair-failed', what: 'nft', err }, 'could not restore the nft rules; retrying')
    }
  }
}
