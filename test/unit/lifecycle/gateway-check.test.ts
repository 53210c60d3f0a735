import t from 'tap'
import { nextCheckInMs } from '../../../src/lifecycle/gateway-check.js'

t.test('the gateway is looked at fast at first, then every 500 ms, then every 10 s once it answered', async t => {
  t.same([0, 1, 2, 3, 4, 5, 6, 7].map(n => nextCheckInMs(n, false)), [10, 20, 40, 80, 160, 320, 500, 500])
  t.equal(nextCheckInMs(10_000, false), 500, 'no overflow after many checks')
  t.equal(nextCheckInMs(0, true), 10_000)
  t.equal(nextCheckInMs(50, true), 10_000)
  // the first 500 ms hold 6 looks: an answer that came in 1 ms is seen within 10 ms, one within 150 ms within 310 ms
  const times = [0, 1, 2, 3, 4, 5].reduce<number[]>((acc, n) => [...acc, (acc.at(-1) ?? 0) + nextCheckInMs(n, false)], [])
  t.same(times, [10, 30, 70, 150, 310, 630])
})
