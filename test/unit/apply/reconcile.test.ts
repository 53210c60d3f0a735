/**
 * The reconciler against the in-memory nft (FakeNft: transactions, listings in nft's JSON shape): drift is
 * repaired, and a reload's applyRules never races a check — a check that listed the table just before new rules
 * went in must not take them for drift and put the old ones back.
 */
import t from 'tap'
import { pino } from 'pino'
import { Reconciler } from '../../../src/apply/reconcile.js'
import type { Rtnl } from '../../../src/netlink/types.js'
import { FakeNft, type NftListing } from '../../../src/nft/runner.js'
import { createMetrics } from '../../../src/observe/metrics.js'
import type { NftFamily } from '../../../src/plan/ruleset.js'
import type { Plan } from '../../../src/plan/types.js'

function plan (port: number, dest: string): Plan {
  const t = 'ip egress_router'
  const script = [
    `add table ${t}`, `flush table ${t}`,
    `add chain ${t} nat_prerouting { type nat hook prerouting priority dstnat; policy accept; }`,
    `add rule ${t} nat_prerouting tcp dport ${port} dnat to ${dest}:${port}`, ''
  ].join('\n')
  // the network part is not this test's subject: a handle that fails every call makes its check log and move on
  return { nft: { family: 'ip', table: 'egress_router', script }, network: { link: {}, routes: [], rules: [] } } as unknown as Plan
}

const nl = new Proxy({}, { get: () => () => { throw new Error('no netlink in this test') } }) as Rtnl

/** A FakeNft whose next listing is taken at once but handed over only when the test says so. */
class GatedNft extends FakeNft {
  #gate: { release: () => void, taken: Promise<void>, took: () => void } | null = null
  holdNextListing (): { release: () => void, taken: Promise<void> } {
    let release!: () => void
    let took!: () => void
    const released = new Promise<void>((resolve) => { release = resolve })
    const taken = new Promise<void>((resolve) => { took = resolve })
    this.#gate = { release: () => { release() }, taken, took }
    this.#released = released
    return { release, taken }
  }

  #released: Promise<void> = Promise.resolve()
  override async listTable (family: NftFamily, table: string): Promise<NftListing | null> {
    const listing = await super.listTable(family, table)
    const gate = this.#gate
    if (gate !== null) {
      this.#gate = null
      gate.took()
      await this.#released
    }
    return listing
  }
}

function setup (): { nft: GatedNft, reconciler: Reconciler, metrics: ReturnType<typeof createMetrics> } {
  const nft = new GatedNft()
  const metrics = createMetrics({ defaultMetrics: false })
  const reconciler = new Reconciler({ plan: plan(80, '203.0.113.10'), nl, nft, logger: pino({ level: 'silent' }), metrics })
  return { nft, reconciler, metrics }
}

async function repairs (metrics: ReturnType<typeof createMetrics>): Promise<number> {
  return (await metrics.reconcileRepairs.get()).values.find((v) => v.labels.what === 'nft')?.value ?? 0
}

function rulesOf (listing: NftListing | null): string {
  return JSON.stringify(listing).match(/dnat to [0-9.:]+/g)?.join(',') ?? ''
}

t.test('a flushed table is drift: restored and counted', async t => {
  const { nft, reconciler, metrics } = setup()
  await reconciler.applyRules()
  nft.tamper('flush ruleset\n')
  await reconciler.tick()
  t.equal(rulesOf(await nft.listTable('ip', 'egress_router')), 'dnat to 203.0.113.10:80', 'the rules are back')
  t.equal(await repairs(metrics), 1, 'one repair counted')
  await reconciler.tick()
  t.equal(await repairs(metrics), 1, 'no drift, no repair')
})

t.test('a reload while a check is listing the table: the new rules stay, nothing is "repaired"', async t => {
  const { nft, reconciler, metrics } = setup()
  await reconciler.applyRules()
  const gate = nft.holdNextListing()
  const check = reconciler.tick()
  await gate.taken // the check holds a listing of the OLD rules
  let reloaded = false
  const reload = reconciler.applyRules(plan(81, '203.0.113.11')).then(() => { reloaded = true })
  // Give the reload every chance to go ahead of the check (a bounded number of event-loop turns): a reconciler
  // that let it would now have the new rules applied and expected while the check still holds the old listing.
  for (let i = 0; i < 50 && !reloaded; i++) await new Promise((resolve) => setImmediate(resolve))
  t.equal(reloaded, false, 'the reload waits for the check in progress')
  gate.release()
  await Promise.all([check, reload])
  t.equal(rulesOf(await nft.listTable('ip', 'egress_router')), 'dnat to 203.0.113.11:81', 'the reloaded rules are in place')
  t.equal(await repairs(metrics), 0, 'the check did not take the reload for drift')
  await reconciler.tick()
  t.equal(rulesOf(await nft.listTable('ip', 'egress_router')), 'dnat to 203.0.113.11:81', 'and the next check keeps them')
  t.equal(reconciler.plan.nft.script, plan(81, '203.0.113.11').nft.script, 'the reconciler now holds the new plan')
})

t.test('the safety net lists the table only when the ruleset generation moved, and every tick when it cannot be read', async t => {
  const nft = new FakeNft()
  const metrics = createMetrics({ defaultMetrics: false })
  let generation = 7
  let readable = true
  const reconciler = new Reconciler({
    plan: plan(80, '203.0.113.10'),
    nl,
    nft,
    logger: pino({ level: 'silent' }),
    metrics,
    generation: { read: async () => { if (!readable) throw new Error('no answer'); return generation }, close: () => {} }
  })
  await reconciler.applyRules()
  const listings = (): number => nft.calls.filter((c) => c.op === 'listTable').length
  const afterApply = listings()
  for (let i = 0; i < 3; i++) await reconciler.tick()
  t.equal(listings(), afterApply, 'the generation read after the apply has not moved: no listing on three ticks')
  const runs = (await metrics.reconcileRuns.get()).values.find((v) => v.labels.what === 'nft')?.value
  t.equal(runs, 3, 'each tick still counts as an nft check')

  // someone else's transaction: the generation moves, the next tick lists (and finds our table intact)
  generation += 1
  await reconciler.tick()
  t.equal(listings(), afterApply + 1, 'listed once the generation moved')
  await reconciler.tick()
  t.equal(listings(), afterApply + 1, 'and not again while it stays')

  // a flush behind our back, its event lost: the generation finds it on the next tick, and the repair follows
  nft.tamper('flush ruleset\n')
  generation += 1
  await reconciler.tick()
  t.equal(await repairs(metrics), 1, 'the flushed table was found through the generation and restored')
  t.match(rulesOf(await nft.listTable('ip', 'egress_router')), 'dnat to 203.0.113.10:80')
  const afterRepair = listings()
  await reconciler.tick()
  t.equal(listings(), afterRepair, 'the repair recorded its own generation: no listing after it')

  // the generation cannot be read: the table is listed on every tick (the events are down in this test)
  readable = false
  await reconciler.tick()
  await reconciler.tick()
  t.equal(listings(), afterRepair + 2, 'listed on each tick while the generation is unknown')
})
