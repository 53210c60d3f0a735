import t from 'tap'
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { NetlinkError } from '../../../src/errors.js'
import { readSysctl, sysctlFile, writeSysctl } from '../../../src/netlink/sysctl.js'

// a directory laid out like /proc/sys stands in for it: the code only reads and writes files
function fakeProc (t: { testdir: (...args: any[]) => string }): string {
  const root = t.testdir({})
  mkdirSync(join(root, 'net/ipv4/conf/eth0'), { recursive: true })
  writeFileSync(join(root, 'net/ipv4/conf/eth0/arp_notify'), '0\n')
  return root
}

t.test('a write remembers the old value and is skipped when the value is already there', async t => {
  const root = fakeProc(t)
  t.same(await writeSysctl('net/ipv4/conf/eth0/arp_notify', '1', root), { path: 'net/ipv4/conf/eth0/arp_notify', changed: true, old: '0' })
  t.equal(readFileSync(join(root, 'net/ipv4/conf/eth0/arp_notify'), 'utf8'), '1\n')
  t.same(await writeSysctl('net/ipv4/conf/eth0/arp_notify', '1', root), { path: 'net/ipv4/conf/eth0/arp_notify', changed: false, old: '1' })
  t.equal(await readSysctl('net/ipv4/conf/eth0/arp_notify', root), '1')
})

t.test('a missing path is a NetlinkError ENOENT (the undo stack counts it as already gone)', async t => {
  const root = fakeProc(t)
  await t.rejects(writeSysctl('net/ipv4/conf/gone0/arp_notify', '1', root), { name: 'NetlinkError', errno: 'ENOENT' })
  await t.rejects(readSysctl('net/ipv4/conf/gone0/arp_notify', root), NetlinkError)
})

t.test('paths cannot climb out of /proc/sys', async t => {
  t.equal(sysctlFile('net/ipv4/ip_forward'), '/proc/sys/net/ipv4/ip_forward')
  t.throws(() => sysctlFile('net/../../etc/passwd'), TypeError)
  t.throws(() => sysctlFile(''), TypeError)
})
