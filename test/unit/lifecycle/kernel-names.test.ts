/**
 * followKernelNames: which answers reach the daemon's rule rewrite (onChange), coalesced, and what `resolved`
 * holds; follow() on reload. The resolver is an in-memory stand-in; the daemon with dnsmasq is in
 * test/netns/dns-proxy-kernel.test.ts.
 */
import t from 'tap'
import { setImmediate as tick } from 'node:timers/promises'
import { pino } from 'pino'
import { followKernelNames } from '../../../src/lifecycle/kernel-names.js'
import { FakeResolver } from '../../helpers/fake-resolver.js'

const logger = pino({ level: 'silent' })

function start (names: readonly string[], resolver: FakeResolver): { changes: () => number, follow: ReturnType<typeof followKernelNames> } {
  let changes = 0
  const follow = followKernelNames({ names, resolver, logger, onChange: () => { changes += 1 } })
  return { changes: () => changes, follow }
}

const addresses = (follow: ReturnType<typeof followKernelNames>, name: string): string[] | undefined => follow.resolved.get(name)?.map((a) => a.address)

t.test('an answer already cached is taken at once; a change is one onChange, however many names moved together', async (t) => {
  const resolver = new FakeResolver()
  resolver.set('a.example.com', ['203.0.113.1'])
  const { changes, follow } = start(['a.example.com', 'b.example.com'], resolver)
  t.same(addresses(follow, 'a.example.com'), ['203.0.113.1'], 'the cached answer, synchronously')
  t.equal(addresses(follow, 'b.example.com'), undefined, 'no answer yet: absent')
  t.equal(resolver.watching('a.example.com') + resolver.watching('b.example.com'), 2, 'both names are watched')
  await tick()
  t.equal(changes(), 1, 'one change for the first answer')

  resolver.set('a.example.com', ['203.0.113.2'])
  resolver.set('b.example.com', ['203.0.113.3', '203.0.113.4'])
  t.equal(changes(), 1, 'not called synchronously')
  await tick()
  t.equal(changes(), 2, 'two names moved in one turn: one rewrite')
  t.same(addresses(follow, 'b.example.com'), ['203.0.113.3', '203.0.113.4'])

  resolver.set('b.example.com', ['203.0.113.4', '203.0.113.3'])
  resolver.set('a.example.com', ['203.0.113.2'], true)
  await tick()
  t.equal(changes(), 2, 'the same addresses reordered, or the same answer gone stale: nothing to rewrite')

  resolver.set('a.example.com', [])
  await tick()
  t.equal(changes(), 3, 'a name that is gone (no addresses) is a change: its rule goes')
  t.same(addresses(follow, 'a.example.com'), [])
  follow.close()
})

t.test('a name not cached is asked once at start; a failure leaves it absent and watched', async (t) => {
  const resolver = new FakeResolver()
  const { changes, follow } = start(['slow.example.com'], resolver)
  t.equal(resolver.resolveCalls, 1, 'asked at once, not on the first refresh')
  await tick()
  t.equal(changes(), 0, 'the lookup failed: nothing changed')
  t.equal(follow.resolved.has('slow.example.com'), false)
  resolver.set('slow.example.com', ['203.0.113.9'])
  await tick()
  t.equal(changes(), 1, 'the watch brings the answer later')
  t.same(addresses(follow, 'slow.example.com'), ['203.0.113.9'])
  follow.close()
})

t.test('follow() on reload: new names are watched, dropped ones forgotten (a change), kept ones untouched', async (t) => {
  const resolver = new FakeResolver()
  resolver.set('keep.example.com', ['203.0.113.1'])
  resolver.set('drop.example.com', ['203.0.113.2'])
  resolver.set('new.example.com', ['203.0.113.3'])
  const { changes, follow } = start(['keep.example.com', 'drop.example.com'], resolver)
  await tick()
  const before = changes()
  follow.follow(['keep.example.com', 'new.example.com'])
  t.equal(resolver.watching('drop.example.com'), 0, 'the dropped name is no longer watched')
  t.equal(resolver.watching('keep.example.com'), 1, 'the kept one is watched once, as before')
  t.equal(follow.resolved.has('drop.example.com'), false, 'and forgotten')
  t.same(addresses(follow, 'new.example.com'), ['203.0.113.3'], 'the new one has its cached answer')
  await tick()
  t.equal(changes(), before + 1, 'one rewrite for the lot')
  resolver.set('drop.example.com', ['203.0.113.99'])
  await tick()
  t.equal(changes(), before + 1, 'the dropped name moving changes nothing')
  follow.follow(['keep.example.com', 'new.example.com'])
  await tick()
  t.equal(changes(), before + 1, 'following the same names again: no change')
  follow.close()
})

t.test('after close nothing is called and no name stays watched', async (t) => {
  const resolver = new FakeResolver()
  resolver.set('a.example.com', ['203.0.113.1'])
  const { changes, follow } = start(['a.example.com'], resolver)
  follow.close()
  await tick()
  t.equal(changes(), 0, 'the first answer, pending when closed, is not delivered')
  t.equal(resolver.watching('a.example.com'), 0)
  resolver.set('a.example.com', ['203.0.113.2'])
  await tick()
  t.equal(changes(), 0)
})
