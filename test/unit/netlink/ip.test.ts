import t from 'tap'
import fc from 'fast-check'
import { bufferToIp, canonicalIp, ipToBuffer } from '../../../src/netlink/ip.js'

t.test('addresses become network-order bytes and come back canonical', async t => {
  t.same([...ipToBuffer('192.0.2.1')], [192, 0, 2, 1])
  t.same([...ipToBuffer('2001:db8::1')], [0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1])
  t.same([...ipToBuffer('::ffff:192.0.2.1')].slice(10), [0xff, 0xff, 192, 0, 2, 1])
  t.equal(canonicalIp('2001:DB8:0:0::1'), '2001:db8::1')
  t.equal(canonicalIp('::'), '::')
  t.equal(bufferToIp(Buffer.alloc(16)), '::')
  t.throws(() => ipToBuffer('999.1.1.1'), TypeError)
  t.throws(() => bufferToIp(Buffer.alloc(5)), TypeError)
  fc.assert(fc.property(fc.ipV4(), ip => bufferToIp(ipToBuffer(ip)) === ip))
  fc.assert(fc.property(fc.ipV6(), ip => ipToBuffer(bufferToIp(ipToBuffer(ip))).equals(ipToBuffer(ip))))
})
