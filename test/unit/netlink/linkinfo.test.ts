import t from 'tap'
import { endianness } from 'node:os'
import { decodeAttrs, decodeLinkInfo, encodeAttr, encodeMacvlanLinkInfo, u32 } from '../../../src/netlink/linkinfo.js'

const LE = endianness() === 'LE'

t.test('macvlan IFLA_LINKINFO is laid out byte for byte as the kernel expects', { skip: LE ? false : 'expected bytes are written for a little-endian host' }, async t => {
  const bytes = encodeMacvlanLinkInfo('bridge')
  t.same([...bytes], [
    // IFLA_INFO_KIND: len 12 (4 header + "macvlan\0"), type 1
    12, 0, 1, 0, 0x6d, 0x61, 0x63, 0x76, 0x6c, 0x61, 0x6e, 0,
    // IFLA_INFO_DATA: len 12, type 2, holding IFLA_MACVLAN_MODE: len 8, type 1, u32 4 (bridge)
    12, 0, 2, 0, 8, 0, 1, 0, 4, 0, 0, 0
  ])
  t.same([...encodeMacvlanLinkInfo('private')].slice(20), [1, 0, 0, 0])
  t.same([...encodeMacvlanLinkInfo('vepa')].slice(20), [2, 0, 0, 0])
  t.same([...encodeMacvlanLinkInfo('passthru')].slice(20), [8, 0, 0, 0])
})

t.test('attributes are padded to 4 bytes, with the unpadded length in the header', async t => {
  const a = encodeAttr(7, Buffer.from('ab'))
  t.equal(a.length, 8)
  t.same([...a.subarray(4)], [0x61, 0x62, 0, 0])
  t.equal(LE ? a.readUInt16LE(0) : a.readUInt16BE(0), 6)
  t.throws(() => u32(-1), RangeError)
  t.throws(() => u32(2 ** 32), RangeError)
})

t.test('decoding what was encoded gives the kind and mode back', async t => {
  for (const mode of ['bridge', 'private', 'vepa', 'passthru'] as const) {
    t.match(decodeLinkInfo(encodeMacvlanLinkInfo(mode)), { kind: 'macvlan', macvlanMode: mode, slaveKind: null })
  }
})

t.test('decoding tolerates what the kernel adds and what it leaves out', async t => {
  t.same(decodeLinkInfo(undefined), { kind: null, slaveKind: null, macvlanMode: null, data: null }, 'a physical NIC has no linkinfo')
  // veth: kind only; a bridge port: slave kind; NLA_F_NESTED (0x8000) set on the data attribute
  const veth = encodeAttr(1, Buffer.from('veth\0'))
  t.match(decodeLinkInfo(veth), { kind: 'veth', macvlanMode: null })
  const nested = encodeAttr(2 | 0x8000, encodeAttr(1, u32(16)))
  const enslaved = Buffer.concat([encodeAttr(1, Buffer.from('macvlan\0')), nested, encodeAttr(4, Buffer.from('bridge\0'))])
  t.match(decodeLinkInfo(enslaved), { kind: 'macvlan', macvlanMode: 'source', slaveKind: 'bridge' })
  // a truncated trailing attribute is ignored, not read past the end
  const truncated = Buffer.concat([veth, Buffer.from([40, 0, 2, 0, 1, 2])])
  t.same(decodeAttrs(truncated).length, 1)
  t.match(decodeLinkInfo(truncated), { kind: 'veth' })
})
