import t from 'tap'
import { NetlinkError } from '../../../src/errors.js'
import { UndoStack } from '../../../src/apply/undo.js'

t.test('unwind runs in reverse, treats already-gone as done, collects errors and never stops', async t => {
  const ran: string[] = []
  const undo = new UndoStack()
  undo.push('delete link macvlan0', () => { ran.push('link') })
  undo.push('delete address', async () => { ran.push('address'); throw new NetlinkError('delete address', 'EADDRNOTAVAIL') })
  undo.push('restore route', async () => { ran.push('route'); throw new NetlinkError('restore route', 'EPERM') })
  undo.push('delete rule', async () => { ran.push('rule') })
  t.equal(undo.size, 4)
  const result = await undo.unwind()
  t.same(ran, ['rule', 'route', 'address', 'link'])
  t.same(result.undone, ['delete rule', 'delete address', 'delete link macvlan0'])
  t.equal(result.failed.length, 1)
  t.match(result.failed[0], { name: 'restore route', error: { errno: 'EPERM' } })
  t.equal(undo.size, 0)
  t.same(await undo.unwind(), { undone: [], failed: [] }, 'a second unwind does nothing')
})
