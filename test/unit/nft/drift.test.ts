/**
 * Drift detection on `nft -j list table` output as nft 1.0.6 prints it (fixture trimmed from a real listing).
 */
import { createHash } from 'node:crypto'
import t from 'tap'
import { describeDrift, fingerprint, tableShape } from '../../../src/nft/drift.js'
import type { NftListing } from '../../../src/nft/runner.js'

type Item = Record<string, unknown>

const iif = (name: string): Item => ({ match: { op: '==', left: { meta: { key: 'iifname' } }, right: name } })
const counter = (packets: number, bytes: number): Item => ({ counter: { packets, bytes } })

/** A listing like the kernel's, with handles and counters that vary between readings. */
function listing (o: { handles?: number, packets?: number, extraRule?: boolean, dropRule?: boolean, swap?: boolean, chainOrder?: 'reversed', policy?: string } = {}): NftListing {
  const h = o.handles ?? 0
  const p = o.packets ?? 0
  const chains: Item[] = [
    { chain: { family: 'ip', table: 'egress_router', name: 'nat_prerouting', handle: 1 + h, type: 'nat', hook: 'prerouting', prio: -100, policy: 'accept' } },
    { chain: { family: 'ip', table: 'egress_router', name: 'filter_input', handle: 2 + h, type: 'filter', hook: 'input', prio: 0, policy: o.policy ?? 'accept' } }
  ]
  if (o.chainOrder === 'reversed') chains.reverse()
  const dnat: Item = {
    rule: {
      family: 'ip', table: 'egress_router', chain: 'nat_prerouting', handle: 10 + h, comment: 'EGRESS_DESTINATION line 1: 80 tcp',
      expr: [iif('eth0'),
        { match: { op: '==', left: { fib: { result: 'type', flags: ['daddr'] } }, right: 'local' } },
        { match: { op: '==', left: { payload: { protocol: 'tcp', field: 'dport' } }, right: 80 } },
        counter(p, p * 60), { dnat: { addr: '203.0.113.10', port: 80 } }]
    }
  }
  const replies: Item = {
    rule: {
      family: 'ip', table: 'egress_router', chain: 'filter_input', handle: 11 + h, comment: 'replies from the LAN',
      expr: [iif('macvlan0'), { match: { op: 'in', left: { ct: { key: 'state' } }, right: ['established', 'related'] } }, { accept: null }]
    }
  }
  const drop: Item = {
    rule: { family: 'ip', table: 'egress_router', chain: 'filter_input', handle: 12 + h, comment: 'no new connections from the LAN', expr: [iif('macvlan0'), counter(p, p), { drop: null }] }
  }
  const input = o.swap === true ? [drop, replies] : [replies, drop]
  const rules: Item[] = [dnat, ...(o.dropRule === true ? input.filter(r => r !== drop) : input)]
  if (o.extraRule === true) {
    rules.push({ rule: { family: 'ip', table: 'egress_router', chain: 'filter_input', handle: 99, expr: [iif('eth0'), { match: { op: '==', left: { payload: { protocol: 'tcp', field: 'dport' } }, right: 22 } }, { accept: null }] } })
  }
  return {
    nftables: [
      { metainfo: { version: '1.0.6', release_name: 'Lester Gooch #5', json_schema_version: 1 } },
      { table: { family: 'ip', name: 'egress_router', handle: 3 + h } },
      ...chains,
      ...rules
    ]
  }
}

t.test('handles and counter values do not change the fingerprint', async t => {
  const a = listing()
  const b = listing({ handles: 40, packets: 12345 })
  t.equal(fingerprint(a), fingerprint(b))
  t.match(fingerprint(a), /^[0-9a-f]{64}$/)
  t.same(tableShape(a), tableShape(b))
  t.equal(describeDrift(a, b), null)
})

t.test('key order and chain listing order do not change the fingerprint', async t => {
  const shuffled = JSON.parse(JSON.stringify(listing()), (_k, v: unknown) =>
    (typeof v === 'object' && v !== null && !Array.isArray(v)) ? Object.fromEntries(Object.entries(v).reverse()) : v) as NftListing
  t.equal(fingerprint(shuffled), fingerprint(listing()))
  t.equal(fingerprint(listing({ chainOrder: 'reversed' })), fingerprint(listing()))
})

t.test('a rule that counts differs from one that does not', async t => {
  const l = listing()
  const stripped: NftListing = {
    nftables: l.nftables.map(item => {
      const rule = item.rule as { expr: Item[] } | undefined
      return rule === undefined ? item : { rule: { ...rule, expr: rule.expr.filter(e => !('counter' in e)) } }
    })
  }
  t.not(fingerprint(stripped), fingerprint(l))
})

t.test('the fingerprint is the sha256 (hex) of the canonical shape, as node:crypto computes it', async t => {
  t.equal(fingerprint(null), createHash('sha256').update(JSON.stringify({ present: false })).digest('hex'))
  t.equal(tableShape(null).digest, fingerprint(null))
})

t.test('a missing table is drift, described as missing', async t => {
  const expected = listing()
  t.equal(tableShape(null).present, false)
  t.not(fingerprint(null), fingerprint(expected))
  t.equal(describeDrift(expected, null), 'table ip egress_router is missing')
  t.equal(describeDrift(null, null), null)
  t.equal(describeDrift(null, expected), 'table ip egress_router exists but should not')
})

t.test('a deleted rule is described by what it did', async t => {
  const d = describeDrift(listing(), listing({ dropRule: true, handles: 7 }))
  t.equal(d, 'chain filter_input: rule removed: iifname "macvlan0" counter drop comment "no new connections from the LAN"')
})

t.test('an added rule is described', async t => {
  const d = describeDrift(listing(), listing({ extraRule: true }))
  t.equal(d, 'chain filter_input: rule added: iifname "eth0" tcp dport 22 accept')
})

t.test('reordered rules are drift: order decides what matches first', async t => {
  const d = describeDrift(listing(), listing({ swap: true }))
  t.equal(d, 'chain filter_input: rules reordered')
})

t.test('a changed chain policy, a missing chain and a foreign chain are described', async t => {
  t.equal(describeDrift(listing(), listing({ policy: 'drop' })),
    'chain filter_input changed from type filter hook input priority 0 policy accept to type filter hook input priority 0 policy drop')
  const l = listing()
  const withoutNat: NftListing = { nftables: l.nftables.filter(i => (i.chain as Item | undefined)?.name !== 'nat_prerouting' && (i.rule as Item | undefined)?.chain !== 'nat_prerouting') }
  t.equal(describeDrift(l, withoutNat), 'chain nat_prerouting is missing')
  t.equal(describeDrift(withoutNat, l), 'chain nat_prerouting was added (1 rules)')
})

t.test('a set added to our table is drift', async t => {
  const l = listing()
  const withSet: NftListing = { nftables: [...l.nftables, { set: { family: 'ip', name: 'x', table: 'egress_router', type: 'ipv4_addr', handle: 50 } }] }
  t.equal(describeDrift(l, withSet), 'sets/objects changed (0 removed, 1 added)')
})

t.test('a flushed table lists every removed rule, but only the first few', async t => {
  const l = listing()
  const flushed: NftListing = { nftables: l.nftables.filter(i => !('rule' in i)) }
  const d = describeDrift(l, flushed) ?? ''
  t.match(d, /^chain filter_input: rule removed: .*replies from the LAN/)
  t.match(d, /chain nat_prerouting: rule removed: iifname "eth0" fib daddr type local tcp dport 80 counter dnat to 203\.0\.113\.10:80/)
  const many: NftListing = { nftables: [...l.nftables, ...Array.from({ length: 8 }, (_, i) => ({ rule: { family: 'ip', table: 'egress_router', chain: 'filter_input', handle: 200 + i, expr: [{ match: { op: '==', left: { payload: { protocol: 'tcp', field: 'dport' } }, right: 1000 + i } }, { accept: null }] } }))] }
  const dm = describeDrift(l, many) ?? ''
  t.equal(dm.split('; ').length, 6)
  t.match(dm, /and 3 more$/)
})
