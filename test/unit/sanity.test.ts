import t from 'tap'
import { isIP } from 'node:net'
t.test('isIP', async t => { t.equal(isIP('192.0.2.1'), 4) })
