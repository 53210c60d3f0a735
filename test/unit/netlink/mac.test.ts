import t from 'tap'
import { createHash } from 'node:crypto'
import fc from 'fast-check'
import { bufferToMac, macToBuffer, randomMac, stableMac } from '../../../src/netlink/mac.js'

const localUnicast = (mac: string): boolean => (parseInt(mac.slice(0, 2), 16) & 0x03) === 0x02

t.test('stableMac is a pure, locally administered unicast function of the source address', async t => {
  t.equal(stableMac('192.0.2.99'), stableMac('192.0.2.99'))
  t.equal(stableMac('192.0.2.99/24'), stableMac('192.0.2.99'), 'the prefix does not matter')
  t.equal(stableMac('2001:DB8::99'), stableMac('2001:db8::99'), 'nor the case')
  t.not(stableMac('192.0.2.99'), stableMac('192.0.2.98'))
  t.match(stableMac('192.0.2.99'), /^[0-9a-f]{2}(:[0-9a-f]{2}){5}$/)
  fc.assert(fc.property(fc.ipV4(), ip => localUnicast(stableMac(ip))))
  fc.assert(fc.property(fc.ipV6(), ip => localUnicast(stableMac(ip))))
})

t.test('stableMac is the MAC earlier versions derived (sha256 by node:crypto): an upgrade keeps an allow-listed MAC', async t => {
  t.equal(stableMac('192.0.2.99/24'), 'b2:7a:70:50:9b:0c')
  const before = (address: string): string => {
    const d = createHash('sha256').update(`egress-router:${address.toLowerCase()}`).digest()
    d[0] = ((d[0] as number) & 0xfc) | 0x02
    return [...d.subarray(0, 6)].map(x => x.toString(16).padStart(2, '0')).join(':')
  }
  fc.assert(fc.property(fc.oneof(fc.ipV4(), fc.ipV6()), ip => stableMac(ip) === before(ip)))
})

t.test('randomMac is locally administered unicast and varies', async t => {
  const seen = new Set<string>()
  for (let i = 0; i < 50; i++) {
    const mac = randomMac()
    t.ok(localUnicast(mac), mac)
    seen.add(mac)
  }
  t.ok(seen.size > 45)
})

t.test('MAC text and bytes convert both ways; garbage is refused', async t => {
  t.same([...macToBuffer('02:aB:00:ff:10:01')], [2, 0xab, 0, 0xff, 0x10, 1])
  t.equal(bufferToMac(Buffer.from([2, 0xab, 0, 0xff, 0x10, 1])), '02:ab:00:ff:10:01')
  t.throws(() => macToBuffer('02:ab:00:ff:10'), TypeError)
  t.throws(() => macToBuffer('zz:ab:00:ff:10:01'), TypeError)
})
