/**
 * SIGHUP with connections in flight: the configuration comes from an `EGRESS_*_FILE`, the test rewrites the file
 * and signals. A valid one applies (new ACL, new forwards, new rules in one nft transaction; new listeners open,
 * removed ones close) while established connections run on to the end with matching checksums. An invalid one is
 * rejected with error lines (asserted as parsed JSON) and the old configuration keeps working. In redirect mode a
 * UDP flow whose destination the reload changes is moved: its stale conntrack entry is deleted, and a client that
 * keeps sending every 100 ms reaches the new destination.
 */
import t, { type Test } from 'tap'
import type { LogLine } from '../../src/lab/router-process.js'
import type { Topology } from '../../src/lab/topology.js'
import { waitFor } from '../../src/lab/wait.js'
import { privileged } from '../helpers/privileged.js'
import { httpGet, startPeerServer, tcpRequest, type PeerServer } from '../helpers/peers.js'
import { distMissing } from '../helpers/router-e2e.js'
import { configFile, opsDaemon, opsEnv, opsTopology, reaches, reload, startTransfer, startUdpFlow, survives, v4 } from '../helpers/ops-e2e.js'

const missing = distMissing()
if (missing !== null) t.fail(missing)

const MiB = 1024 * 1024
/** 32 MiB at 16 MiB/s: about 2 s, in flight across the reload */
const SIZE = 32 * MiB
const RATE = 16 * MiB
const other = v4.destExtra[0]

async function server (t: Test, topo: Topology, host: string, opts: Parameters<typeof startPeerServer>[1]): Promise<PeerServer> {
  const s = await startPeerServer(topo, { ...opts, host })
  t.teardown(s.stop)
  return s
}

function rejected (t: Test, line: LogLine, variable: string): void {
  t.equal(line.event, 'reload-rejected', 'the invalid configuration is rejected')
  t.equal(line.level, 50, 'at level error')
  const issues = line.issues as string[] | undefined
  t.ok(Array.isArray(issues) && issues.length > 0 && issues.every((i) => i.startsWith(`${variable} line `)), `the error names the variable and line: ${JSON.stringify(issues)}`)
}

t.test('http-proxy: a new ACL applies on SIGHUP, a tunnel in flight survives, an invalid ACL keeps the old one', privileged(), async (t) => {
  const topo = await opsTopology(t)
  const sink = await server(t, topo, v4.dest, { tcp: { mode: 'sink' } })
  const webOther = await server(t, topo, other, { http: true })
  const acl = configFile(t, 'acl', `${v4.dest}\n`)
  const router = await opsDaemon(t, topo, opsEnv('http-proxy', { EGRESS_HTTP_PROXY_DESTINATION_FILE: acl.path }))
  const proxy = `http://${v4.routerPod}:8080`
  const get = async (host: string): Promise<number> => (await httpGet(topo, { url: `http://${host}:${webOther.httpPort as number}/`, proxy })).status
  t.equal(await get(other), 403, `before: ${other} is denied`)

  const transfer = startTransfer(t, topo, { host: v4.routerPod, port: 8080, proxy: `${v4.routerPod}:8080`, target: `${v4.dest}:${sink.tcpPort as number}`, bytes: SIZE, rate: RATE })
  await transfer.waitFor('started')
  acl.write(`${v4.dest}\n${other}\n`)
  const ok = await reload(router, 'reloaded')
  t.equal(ok.event, 'reloaded', `valid: reloaded (${JSON.stringify(ok)})`)
  t.notOk(transfer.events.some((e) => e.event === 'done'), 'the reload happened while the tunnel was busy')
  t.equal(await get(other), 200, `after: ${other} is allowed`)
  await survives(t, transfer, sink, 'CONNECT tunnel', SIZE)

  // `*` must be the last rule: rejected as a whole
  acl.write(`*\n${v4.dest}\n`)
  rejected(t, await reload(router, 'reload-rejected'), 'EGRESS_HTTP_PROXY_DESTINATION')
  t.equal(await get(other), 200, `the old ACL still allows ${other}`)
  t.equal(await get(v4.destExtra[1]), 403, `and still denies ${v4.destExtra[1]} (the rejected \`*\` did not apply)`)
})

t.test('dns-proxy: SIGHUP opens new forwards, closes removed ones, retargets kept ones; connections in flight survive', privileged(), async (t) => {
  const topo = await opsTopology(t)
  const sink = await server(t, topo, v4.dest, { tcp: { mode: 'sink' } })
  const sinkOther = await server(t, topo, other, { tcp: { mode: 'sink' } })
  const port = sink.tcpPort as number
  const forwards = configFile(t, 'forwards', `7000 ${v4.dest} ${port}\n7001 ${v4.dest} ${port}\n`)
  const router = await opsDaemon(t, topo, opsEnv('dns-proxy', { EGRESS_DNS_PROXY_DESTINATION_FILE: forwards.path }))
  const kept = startTransfer(t, topo, { host: v4.routerPod, port: 7000, bytes: SIZE, rate: RATE })
  const removed = startTransfer(t, topo, { host: v4.routerPod, port: 7001, bytes: SIZE, rate: RATE })
  await kept.waitFor('started')
  await removed.waitFor('started')

  forwards.write(`7000 ${other} ${sinkOther.tcpPort as number}\n7002 ${v4.dest} ${port}\n`)
  const ok = await reload(router, 'reloaded')
  t.equal(ok.event, 'reloaded', `valid: reloaded (${JSON.stringify(ok)})`)
  t.notOk(kept.events.some((e) => e.event === 'done') || removed.events.some((e) => e.event === 'done'), 'the reload happened while both connections were busy')
  const refused = await tcpRequest(topo, { host: v4.routerPod, port: 7001, timeoutMs: 2_000 })
  t.equal(refused.ok ? 'connected' : refused.error.code, 'ECONNREFUSED', 'the removed forward 7001 takes no new connections')
  const opened = startTransfer(t, topo, { host: v4.routerPod, port: 7002, bytes: 64 * 1024 })
  t.ok((await opened.done).ok, 'the new forward 7002 carries a connection')
  await reaches(t, topo, 7000, sinkOther, 'a new connection to the kept forward 7000 works', `the new target ${other} to get it`)
  t.pass(`and goes to its new target ${other}`)
  await survives(t, kept, sink, 'forward 7000 (retargeted)', SIZE)
  await survives(t, removed, sink, 'forward 7001 (removed)', SIZE)

  forwards.write('7000 nodot\n')
  rejected(t, await reload(router, 'reload-rejected'), 'EGRESS_DNS_PROXY_DESTINATION')
  const still = startTransfer(t, topo, { host: v4.routerPod, port: 7002, bytes: 64 * 1024 })
  t.ok((await still.done).ok, 'the old forwards keep working (7002)')
})

t.test('redirect: SIGHUP swaps the rules in one transaction, moves a live UDP flow, keeps a TCP flow; an invalid file changes nothing', privileged(), async (t) => {
  const topo = await opsTopology(t)
  const sink = await server(t, topo, v4.dest, { tcp: { mode: 'sink' } })
  const udpOld = await server(t, topo, v4.dest, { udp: { mode: 'hello' } })
  const udpNew = await server(t, topo, other, { udp: { mode: 'hello' } })
  const rules = configFile(t, 'destination', `5000 udp ${v4.dest} ${udpOld.udpPort as number}\n6000 tcp ${v4.dest} ${sink.tcpPort as number}\n`)
  const router = await opsDaemon(t, topo, opsEnv('redirect', { EGRESS_DESTINATION_FILE: rules.path }))
  const applied = router.logs.find((l) => l.event === 'rules')

  const flow = startUdpFlow(t, topo, v4.routerPod, 5000)
  await waitFor(() => flow.answers.some((a) => a.reply.local === `${v4.dest}:${udpOld.udpPort as number}`), { what: 'the UDP flow to reach the old destination', timeoutMs: 10_000, intervalMs: 20 })
  const transfer = startTransfer(t, topo, { host: v4.routerPod, port: 6000, bytes: SIZE, rate: RATE })
  await transfer.waitFor('started')

  rules.write(`5000 udp ${other} ${udpNew.udpPort as number}\n6000 tcp ${v4.dest} ${sink.tcpPort as number}\n`)
  const ok = await reload(router, 'reloaded')
  t.equal(ok.event, 'reloaded', 'valid: reloaded')
  t.not(ok.hash, applied?.hash, 'the ruleset changed (new fingerprint)')
  const ct = router.logs.find((l) => l.event === 'conntrack')
  t.ok(typeof ct?.deleted === 'number' && ct.deleted >= 1, `the stale UDP conntrack entry was deleted: ${JSON.stringify(ct)}`)
  const listed = (await topo.execOk('router', ['nft', 'list', 'table', 'ip', 'egress_router'])).stdout
  t.match(listed, `dnat to ${other}:${udpNew.udpPort as number}`, 'the new rule is in place')
  t.notMatch(listed, `dnat to ${v4.dest}:${udpOld.udpPort as number}`, 'the old one is gone')
  const movedAt = flow.answers.length
  await waitFor(() => flow.answers.slice(movedAt).some((a) => a.reply.local === `${other}:${udpNew.udpPort as number}`), { what: 'the UDP flow to reach the new destination', timeoutMs: 10_000, intervalMs: 20 })
  t.pass(`the client that kept sending every 100 ms from one port now reaches ${other}`)
  const seen = await udpNew.waitForReport((r) => r.event === 'datagram', { what: 'the new destination to see the flow' })
  t.match(seen.peer, `${v4.source}:`, 'from EGRESS_SOURCE')
  await survives(t, transfer, sink, 'redirected TCP flow', SIZE)

  rules.write('5000 sctp 192.0.2.50\n')
  rejected(t, await reload(router, 'reload-rejected'), 'EGRESS_DESTINATION')
  const counters = (text: string): string => text.replace(/counter packets \d+ bytes \d+/g, 'counter packets N bytes N')
  t.equal(counters((await topo.execOk('router', ['nft', 'list', 'table', 'ip', 'egress_router'])).stdout), counters(listed), 'the nft table is as before the rejected reload')
  const after = flow.answers.length
  await waitFor(() => flow.answers.slice(after).some((a) => a.reply.local === `${other}:${udpNew.udpPort as number}`), { what: 'the flow to still reach the new destination', timeoutMs: 10_000, intervalMs: 20 })
  t.pass('the UDP flow still reaches the destination of the last valid configuration')
})
