import t from 'tap'
import { NetlinkError } from '../../../src/errors.js'
import { errnoOf, isAlreadyExists, isAlreadyGone, toNetlinkError } from '../../../src/netlink/errno.js'

t.test('the netlink package\'s error strings map to errno names', async t => {
  t.equal(errnoOf(new Error('Request rejected: EEXIST')), 'EEXIST')
  t.equal(errnoOf(new Error('Request rejected: ENODEV')), 'ENODEV')
  t.equal(errnoOf(new Error('Request rejected: 17')), 'EEXIST', 'a bare number is named')
  t.equal(errnoOf(new Error('Request rejected: 4242')), 'ERRNO_4242', 'an unknown number stays visible')
  t.equal(errnoOf(new Error('Timeout has been reached')), 'ETIMEDOUT')
  t.equal(errnoOf(Object.assign(new Error('send failed'), { code: 'ENOBUFS' })), 'ENOBUFS', 'socket errors carry code')
  t.equal(errnoOf(new Error('Multipart message not terminated properly')), null)
  t.equal(errnoOf('nope'), null)
})

t.test('toNetlinkError names the operation, keeps the cause, and does not wrap twice', async t => {
  const cause = new Error('Request rejected: ENETUNREACH')
  const e = toNetlinkError('replace route default via 203.0.113.1', cause)
  t.ok(e instanceof NetlinkError)
  t.match(e, { code: 'ERR_NETLINK', errno: 'ENETUNREACH', operation: 'replace route default via 203.0.113.1', message: 'replace route default via 203.0.113.1: ENETUNREACH' })
  t.equal(e.cause, cause)
  t.equal(toNetlinkError('outer', e), e)
  t.equal(toNetlinkError('weird', new Error('Unexpected route message received')).errno, 'EIO')
})

t.test('already-gone and already-exists are recognised', async t => {
  for (const errno of ['ENOENT', 'ENODEV', 'ESRCH', 'EADDRNOTAVAIL']) t.ok(isAlreadyGone(new NetlinkError('x', errno)), errno)
  t.notOk(isAlreadyGone(new NetlinkError('x', 'EPERM')))
  t.ok(isAlreadyExists(new Error('Request rejected: EEXIST')))
  t.notOk(isAlreadyExists(new Error('Request rejected: EBUSY')))
})
