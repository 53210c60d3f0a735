/**
 * Redirect mode's lifecycle with the real daemon in the lab topology: host routing leaves the main table alone
 * and leaves nothing behind; `cleanup` after a crash; a macvlan someone else made is adopted and never deleted;
 * init mode; a failed setup rolls back; an invalid configuration touches nothing.
 */
import t, { type Test } from 'tap'
import { LAB, type Topology } from '../../src/lab/topology.js'
import { privileged } from '../helpers/privileged.js'
import { hostOf, startPeerServer, tcpRequest, type PeerServer } from '../helpers/peers.js'
import { daemon, distMissing, dumpState, leftovers, linkInfo, redirectEnv, runToExit, topology, type StateDump } from '../helpers/router-e2e.js'

const missing = distMissing()
if (missing !== null) t.fail(missing)

const v4 = LAB.v4

async function destination (t: Test, topo: Topology): Promise<PeerServer> {
  const server = await startPeerServer(topo, { host: v4.dest, tcp: { mode: 'hello' } })
  t.teardown(server.stop)
  return server
}

async function tcpSource (topo: Topology, port: number, timeoutMs = 3_000): Promise<string> {
  const r = await tcpRequest(topo, { host: v4.routerPod, port, timeoutMs })
  if (!r.ok) return `error ${r.error.code}`
  return r.greeting === null ? 'no greeting' : hostOf(r.greeting.peer)
}

async function mainTable (topo: Topology, family: '-4' | '-6'): Promise<string> {
  return (await topo.execOk('router', ['ip', family, 'route', 'show', 'table', 'main'])).stdout
}

function sameDumps (t: Test, before: StateDump, after: StateDump, when: string): void {
  for (const [name, text] of Object.entries(before)) t.equal(after[name], text, `${when}: \`${name}\` is as before`)
}

t.test('host routing: main table untouched, traffic from EGRESS_SOURCE, nothing left after SIGTERM', privileged(), async (t) => {
  const topo = await topology(t)
  const server = await destination(t, topo)
  const pristine = await dumpState(topo)
  const main4 = await mainTable(topo, '-4')
  const main6 = await mainTable(topo, '-6')
  const env = redirectEnv({ EGRESS_ROUTING: 'host', EGRESS_DESTINATION: `${server.tcpPort as number} tcp ${v4.dest}\n8080 tcp ${v4.dest} ${server.tcpPort as number}\n` })
  const router = await daemon(t, topo, env)
  t.equal(await mainTable(topo, '-4'), main4, 'while running: `ip -4 route show table main` is byte-for-byte unchanged')
  t.equal(await tcpSource(topo, server.tcpPort as number), v4.source, 'tcp leaves from EGRESS_SOURCE')
  t.equal(await tcpSource(topo, 8080), v4.source, 'the port rewrite leaves from EGRESS_SOURCE')
  t.equal(await mainTable(topo, '-4'), main4, 'after traffic: the IPv4 main table is still unchanged')
  t.equal(await mainTable(topo, '-6'), main6, 'while running: `ip -6 route show table main` is byte-for-byte unchanged')
  t.same(await router.stop('SIGTERM', 10_000), { code: 0, signal: null }, 'SIGTERM: exit 0')
  t.same(await leftovers(topo), [], 'no macvlan, no rule at our priorities, no table 6572 routes, no nft table')
  sameDumps(t, pristine, await dumpState(topo), 'after SIGTERM')
})

t.test('host routing after a crash: a restart takes over, SIGTERM removes all; cleanup removes a SIGKILLed daemon\'s state, twice', privileged(), async (t) => {
  const topo = await topology(t)
  const server = await destination(t, topo)
  const env = redirectEnv({ EGRESS_ROUTING: 'host', EGRESS_DESTINATION: `${server.tcpPort as number} tcp ${v4.dest}\n` })

  const crashed = await daemon(t, topo, env)
  t.equal((await crashed.stop('SIGKILL', 5_000)).signal, 'SIGKILL', 'the daemon is SIGKILLed')
  t.not((await leftovers(topo)).length, 0, 'a SIGKILLed daemon leaves its state behind')

  // A restart finds its own state from the crashed run and owns it: SIGTERM then leaves nothing.
  const restarted = await daemon(t, topo, env)
  t.equal(restarted.logs.find((l) => l.event === 'network')?.action, 'found (from an earlier run)', 'the restart finds its own macvlan')
  t.equal(await tcpSource(topo, server.tcpPort as number), v4.source, 'after the restart, traffic leaves from EGRESS_SOURCE')
  t.same(await restarted.stop('SIGTERM', 10_000), { code: 0, signal: null }, 'SIGTERM: exit 0')
  t.same(await leftovers(topo), [], 'nothing of the crashed run nor of the restart remains')

  const again = await daemon(t, topo, env)
  await again.stop('SIGKILL', 5_000)
  const left = await leftovers(topo)
  t.ok(left.some((l) => l.startsWith('link macvlan0')) && left.some((l) => l.startsWith('nft')) && left.some((l) => l.includes('rule')),
    `the crash left the link, the rules and the nft table: ${left.join('; ')}`)
  const first = await runToExit(t, topo, {}, ['cleanup'])
  t.equal(first.code, 0, `cleanup exits 0 (stderr: ${first.stderr.trim()})`)
  const nft = (l: string): boolean => l.startsWith('nft')
  t.same((await leftovers(topo)).filter((l) => !nft(l)), [], 'after cleanup no macvlan, rule at our priorities or table 6572 route remains')
  t.same((await leftovers(topo)).filter(nft), [], 'after cleanup no nft table remains')
  const second = await runToExit(t, topo, {}, ['cleanup'])
  t.equal(second.code, 0, 'a second cleanup exits 0')
  t.same((second.stdout.find((l) => l.event === 'cleanup')?.removed as string[] | undefined)?.filter((l) => !nft(l)), [], 'the second cleanup removed nothing')
  t.same((await leftovers(topo)).filter((l) => !nft(l)), [], 'and nothing remains')
})

t.test('an existing macvlan0 (as a CNI plugin makes it) is adopted and never deleted', privileged(), async (t) => {
  const topo = await topology(t, { precreateMacvlan: { name: 'macvlan0' } })
  const server = await destination(t, topo)
  const before = await linkInfo(topo, 'macvlan0')
  t.ok(before, 'the CNI macvlan exists')
  const env = redirectEnv({ EGRESS_ROUTING: 'host', EGRESS_DESTINATION: `${server.tcpPort as number} tcp ${v4.dest}\n` })
  const router = await daemon(t, topo, env)
  const network = router.logs.find((l) => l.event === 'network')
  t.equal(network?.action, 'adopted', 'the log says adopted')
  t.equal(network?.ifindex, before?.ifindex, 'the same link (ifindex) is used')
  t.equal(await tcpSource(topo, server.tcpPort as number), v4.source, 'traffic leaves from EGRESS_SOURCE on the adopted link')
  t.same(await router.stop('SIGTERM', 10_000), { code: 0, signal: null }, 'SIGTERM: exit 0')
  t.equal((await linkInfo(topo, 'macvlan0'))?.ifindex, before?.ifindex, 'after stop the adopted macvlan still exists')
  t.same(await leftovers(topo, { ownLink: false }), [], 'our rules, routes and nft table are gone')
  const cleanup = await runToExit(t, topo, {}, ['cleanup'])
  t.equal(cleanup.code, 0, 'cleanup exits 0')
  t.equal((await linkInfo(topo, 'macvlan0'))?.ifindex, before?.ifindex, 'after cleanup the adopted macvlan still exists')

  // pod routing too: adopt, carry traffic, stop (which leaves pod state in place), and cleanup keeps the link
  const pod = await daemon(t, topo, redirectEnv({ EGRESS_DESTINATION: `${server.tcpPort as number} tcp ${v4.dest}\n` }))
  t.equal(pod.logs.find((l) => l.event === 'network')?.action, 'adopted', 'pod routing: adopted')
  t.equal(await tcpSource(topo, server.tcpPort as number), v4.source, 'pod routing: traffic leaves from EGRESS_SOURCE')
  await pod.stop('SIGTERM', 10_000)
  t.equal((await runToExit(t, topo, {}, ['cleanup'])).code, 0, 'cleanup exits 0')
  t.equal((await linkInfo(topo, 'macvlan0'))?.ifindex, before?.ifindex, 'pod routing: after stop and cleanup the macvlan still exists')
})

t.test('init mode sets up, exits 0 and leaves the rules in place', privileged(), async (t) => {
  const topo = await topology(t)
  const server = await destination(t, topo)
  const exit = await runToExit(t, topo, redirectEnv({ EGRESS_ROUTER_MODE: 'init', EGRESS_DESTINATION: `${server.tcpPort as number} tcp ${v4.dest}\n` }))
  t.equal(exit.code, 0, `exit 0 (stderr: ${exit.stderr.trim()})`)
  t.ok(exit.stdout.some((l) => l.event === 'init-done'), 'logged init-done')
  t.ok(exit.stdout.some((l) => l.event === 'rules'), 'logged the rules')
  t.ok(await linkInfo(topo, 'macvlan0'), 'the macvlan remains')
  t.match((await topo.execOk('router', ['nft', 'list', 'table', 'ip', 'egress_router'])).stdout, /dnat to 203\.0\.113\.10/, 'the nft table remains')
  t.equal(await tcpSource(topo, server.tcpPort as number), v4.source, 'with no process running, traffic leaves from EGRESS_SOURCE')
})

t.test('a failed setup exits 1 naming the step and leaves nothing of ours', privileged(), async (t) => {
  const topo = await topology(t)
  const server = await destination(t, topo)
  const rules = `${server.tcpPort as number} tcp ${v4.dest}\n`

  await t.test('init mode, EGRESS_INTERFACE names no link', async (t) => {
    const before = await dumpState(topo)
    const exit = await runToExit(t, topo, redirectEnv({ EGRESS_ROUTER_MODE: 'init', EGRESS_INTERFACE: 'nosuch0', EGRESS_DESTINATION: rules }))
    t.equal(exit.code, 1, 'exit 1')
    const failed = exit.stdout.find((l) => l.event === 'setup-failed')
    t.equal(failed?.step, 'network setup', 'the log names the step')
    t.match(String(failed?.msg), /nosuch0/, `the message names the missing link: ${String(failed?.msg)}`)
    sameDumps(t, before, await dumpState(topo), 'after the failure')
  })

  await t.test('redirect mode, the nft rules fail: nothing else was started', async (t) => {
    // A table of our name that someone else made, whose chain has a different hook: our transaction fails.
    await topo.execOk('router', ['nft', 'add table ip egress_router; add chain ip egress_router nat_prerouting { type filter hook input priority 0; }'])
    t.teardown(async () => { await topo.exec('router', ['nft', 'delete', 'table', 'ip', 'egress_router']) })
    const before = await dumpState(topo)
    const exit = await runToExit(t, topo, redirectEnv({ EGRESS_DESTINATION: rules }))
    t.equal(exit.code, 1, 'exit 1')
    const failed = exit.stdout.find((l) => l.event === 'setup-failed')
    t.equal(failed?.step, 'nft rules', 'the log names the step')
    t.match(String(failed?.msg), /nft rejected the ruleset/, `the message says nft refused: ${String(failed?.msg)}`)
    sameDumps(t, before, await dumpState(topo), 'after the failure')
  })

  await t.test('http-proxy mode, the proxy port is taken after the network and rules are set up: all rolled back', async (t) => {
    const squatter = await startPeerServer(topo, { ns: 'router', host: v4.routerPod, tcp: { mode: 'hello' } })
    t.teardown(squatter.stop)
    const before = await dumpState(topo)
    const env = redirectEnv({ EGRESS_ROUTER_MODE: 'http-proxy', EGRESS_HTTP_PROXY_DESTINATION: '*', EGRESS_HTTP_PROXY_PORT: String(squatter.tcpPort as number) })
    delete env.EGRESS_DESTINATION
    const exit = await runToExit(t, topo, env)
    t.equal(exit.code, 1, 'exit 1')
    const failed = exit.stdout.find((l) => l.event === 'setup-failed')
    t.equal(failed?.step, 'listeners', 'the log names the step')
    const rolledBack = (failed?.rolledBack ?? []) as string[]
    t.ok(rolledBack.includes('network setup') && rolledBack.includes('nft rules'), `the log names what was rolled back: ${JSON.stringify(rolledBack)}`)
    t.ok(exit.stdout.some((l) => l.event === 'network'), 'the network had been set up before the failure')
    sameDumps(t, before, await dumpState(topo), 'after the rollback')
  })

  await t.test('redirect mode, /proc/sys read-only (an unprivileged container, sysctls not preset): the macvlan made before the failure is removed', async (t) => {
    const before = await dumpState(topo)
    // The daemon's own mount namespace, with /proc/sys bound read-only over itself.
    const readOnlySys = ['unshare', '--mount', '--', 'sh', '-c', 'mount --bind /proc/sys /proc/sys && mount -o remount,bind,ro /proc/sys && exec "$@"', 'sh']
    const exit = await runToExit(t, topo, redirectEnv({ EGRESS_DESTINATION: rules }), ['run'], 20_000, readOnlySys)
    t.equal(exit.code, 1, `exit 1 (stderr: ${exit.stderr.trim()})`)
    const failed = exit.stdout.find((l) => l.event === 'setup-failed')
    t.equal(failed?.step, 'network setup', 'the log names the step')
    t.match(String(failed?.msg), /sysctl .*EROFS/, `the message names the sysctl and the error: ${String(failed?.msg)}`)
    t.equal(await linkInfo(topo, 'macvlan0'), null, 'no macvlan left behind')
    sameDumps(t, before, await dumpState(topo), 'after the failure')
  })

  await t.test('redirect mode, the health port is taken', async (t) => {
    const squatter = await startPeerServer(topo, { ns: 'router', host: '0.0.0.0', tcp: { mode: 'hello' } })
    t.teardown(squatter.stop)
    const before = await dumpState(topo)
    const exit = await runToExit(t, topo, redirectEnv({ EGRESS_HEALTH_ADDRESS: `:${squatter.tcpPort as number}`, EGRESS_DESTINATION: rules }))
    t.equal(exit.code, 1, 'exit 1')
    t.match(String(exit.stdout.find((l) => l.event === 'setup-failed')?.step), /health/, 'the log names the health listener')
    sameDumps(t, before, await dumpState(topo), 'after the failure')
  })
})

t.test('an invalid configuration exits 2 with the error lines on stderr and touches nothing', privileged(), async (t) => {
  const topo = await topology(t)
  const before = await dumpState(topo)
  const env = redirectEnv({ EGRESS_DESTINATION: `80 tcp ${v4.dest}\n80 sctp ${v4.dest}\n` })
  delete env.EGRESS_GATEWAY
  const exit = await runToExit(t, topo, env)
  t.equal(exit.code, 2, 'exit 2')
  const lines = exit.stderr.trim().split('\n')
  t.ok(lines.some((l) => l.startsWith(`EGRESS_DESTINATION line 2: '80 sctp ${v4.dest}': protocol must be tcp or udp`)), `stderr names the bad destination line: ${JSON.stringify(lines)}`)
  t.ok(lines.some((l) => l.startsWith('EGRESS_GATEWAY')), 'stderr names the missing gateway')
  t.same(exit.stdout, [], 'nothing on stdout: the daemon never started')
  sameDumps(t, before, await dumpState(topo), 'after the rejected start')
})
