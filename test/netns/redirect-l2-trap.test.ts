/**
 * The L2 trap: the LAN silently drops every frame from a MAC it does not know (hypervisor MAC filtering,
 * OpenStack port security, vSphere forged transmits). Built here with a netdev ingress filter on the gateway's
 * side of the LAN link that admits only the MAC of the router's NIC: the macvlan's own MAC goes nowhere. The
 * daemon must not report ready, must say why in one line, and must become ready once the filter is lifted.
 */
import t from 'tap'
import { LAB } from '../../src/lab/topology.js'
import { waitFor } from '../../src/lab/wait.js'
import { privileged } from '../helpers/privileged.js'
import { distMissing } from '../helpers/router-e2e.js'
import { health, opsDaemon, opsEnv, opsTopology, v4, type ReadyzBody } from '../helpers/ops-e2e.js'

const missing = distMissing()
if (missing !== null) t.fail(missing)

t.test('a LAN that drops the macvlan\'s frames: not ready, one error line naming the likely causes; ready once it lets them through', privileged(), async (t) => {
  const topo = await opsTopology(t)
  const links = JSON.parse((await topo.execOk('router', ['ip', '-j', 'link', 'show', LAB.links.routerLan])).stdout) as Array<{ address: string }>
  const nicMac = links[0]?.address
  if (nicMac === undefined) throw new Error('no MAC for the router NIC')
  // Only the NIC's own MAC may talk to the gateway, as a hypervisor's MAC filter would have it.
  await topo.execOk('lan', ['nft', '-f', '-'], {
    input: `table netdev l2trap {\n  chain ingress {\n    type filter hook ingress device "${LAB.links.lanToRouter}" priority 0; policy accept;\n    ether saddr != ${nicMac} drop\n  }\n}\n`
  })

  const router = await opsDaemon(t, topo, opsEnv('redirect', { EGRESS_DESTINATION: `80 tcp ${v4.dest}\n` }), { ready: false })
  const trap = await router.waitForLog((l) => l.event === 'l2-trap', 'the L2 trap line', 15_000)
  t.equal(trap.level, 50, 'logged as an error')
  t.match(String(trap.msg), /does not answer ARP\/ND on macvlan0/, `it says what failed: ${String(trap.msg)}`)
  for (const cause of ['MAC filtering', 'port security', 'forged transmits', 'AWS']) t.match(String(trap.msg), cause, `it names a likely cause: ${cause}`)
  t.equal(router.logs.filter((l) => l.event === 'l2-trap').length, 1, 'one line, not one per probe')

  const r = await health(topo, '/readyz')
  t.equal(r.status, 503, '/readyz: not ready')
  const body = JSON.parse(r.body) as ReadyzBody
  const failing = Object.entries(body.checks).filter(([, c]) => !c.ok).map(([name]) => name)
  t.same(failing, ['gateway'], `only the gateway check fails: ${JSON.stringify(body.checks.gateway)}`)
  t.notOk(router.logs.some((l) => l.event === 'readiness' && l.ready === true), 'never reported ready')

  await topo.execOk('lan', ['nft', 'delete', 'table', 'netdev', 'l2trap'])
  // the daemon asks the kernel to resolve again every 2 s; the answer then makes it ready
  await router.waitReady(15_000)
  const ok = await waitFor(async () => { const a = await health(topo, '/readyz'); return a.status === 200 ? a : undefined }, { what: '/readyz 200', timeoutMs: 5_000, intervalMs: 50 })
  t.equal(ok.status, 200, 'ready once the LAN lets the macvlan through')
  t.ok(router.logs.some((l) => l.event === 'gateway'), 'and it logged that the gateway answered')
})
