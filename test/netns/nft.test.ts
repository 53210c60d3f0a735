/**
 * The nft part against the real kernel, each test in network namespaces of its own (prefix ernft-):
 * idempotent re-apply, other tables untouched, atomicity, drift detection, and real DNAT/SNAT traffic through
 * a three-namespace topology (client — router — destination).
 */
import t, { type Test } from 'tap'
import { execFile, spawn } from 'node:child_process'
import { promisify } from 'node:util'
import type { Config, PortRedirect } from '../../src/config/types.js'
import { NftError } from '../../src/errors.js'
import { describeDrift, fingerprint, tableShape } from '../../src/nft/drift.js'
import { ExecNft } from '../../src/nft/runner.js'
import { nftPlan } from '../../src/plan/nft-script.js'
import { privileged } from '../helpers/privileged.js'

const run = promisify(execFile)

let seq = 0
/** A fresh namespace, deleted when the test ends (even on failure). */
async function netns (t: Test, role: string): Promise<string> {
  const name = `ernft-${process.pid}-${++seq}${role}`
  await run('ip', ['netns', 'add', name])
  t.teardown(async () => { await run('ip', ['netns', 'del', name]).catch(() => {}) })
  await run('ip', ['-n', name, 'link', 'set', 'lo', 'up'])
  return name
}

async function sh (ns: string, ...argv: string[]): Promise<string> {
  return (await run('ip', ['netns', 'exec', ns, ...argv], { timeout: 15_000 })).stdout
}

function port (line: number, p: number, address: string, targetPort = p, protocol: 'tcp' | 'udp' = 'tcp'): PortRedirect {
  return { kind: 'port', line, protocol, port: p, target: { address, family: address.includes(':') ? 6 : 4 }, targetPort, targetPortGiven: targetPort !== p }
}

function config (o: Partial<Config> = {}): Config {
  return {
    modeName: 'redirect',
    mode: 'redirect',
    source: { address: '203.0.113.99', family: 4, prefix: 24, prefixGiven: true },
    gateway: { address: '203.0.113.1', family: 4 },
    interface: null,
    macvlan: { name: 'macvlan0', mode: 'bridge', mac: { kind: 'stable' } },
    podInterface: 'eth0',
    routing: 'pod',
    redirect: { rules: [port(1, 80, '203.0.113.10'), port(2, 8080, '203.0.113.10', 80), port(3, 53, '203.0.113.53', 5353, 'udp')], fallback: null },
    httpProxy: null,
    dnsProxy: null,
    health: { host: '', port: 9090 },
    workers: 1,
    drainTimeoutMs: 25_000,
    dns: { minTtlMs: 2_000, maxTtlMs: 300_000, maxStaleMs: 86_400_000 },
    logLevel: 'info',
    sources: { destinationFile: null, httpProxyDestinationFile: null, dnsProxyDestinationFile: null },
    ...o
  }
}

const macvlan = { macvlan: 'macvlan0' }
const redirectPlan = nftPlan(config(), macvlan)
const fallbackConfig = config({ redirect: { rules: [port(1, 80, '203.0.113.10')], fallback: { kind: 'fallback', line: 2, target: { address: '203.0.113.10', family: 4 } } } })
const hostPlan = nftPlan({ ...fallbackConfig, routing: 'host' }, macvlan)
const proxyPlan = nftPlan(config({ modeName: 'http-proxy', mode: 'http-proxy', redirect: null, httpProxy: { port: 8080, connectPorts: '*', clients: null, accessLog: true, acl: [] } }), macvlan)
const v6Plan = nftPlan(config({
  source: { address: '2001:db8:2::99', family: 6, prefix: 64, prefixGiven: true },
  gateway: { address: '2001:db8:2::1', family: 6 },
  redirect: { rules: [port(1, 80, '2001:db8:2::10')], fallback: null }
}), macvlan)

const FOREIGN = `add table ip foreign
add chain ip foreign input { type filter hook input priority 10; policy accept; }
add rule ip foreign input tcp dport 22 counter accept comment "not ours"
add table inet egress_router
add chain inet egress_router c
add rule inet egress_router c udp dport 53 accept
add table ip6 foreign6
add chain ip6 foreign6 c
`

async function listAll (ns: string): Promise<string> {
  return await sh(ns, 'nft', 'list', 'ruleset')
}

t.test('re-apply leaves our table byte-for-byte the same and never touches another table', privileged(), async t => {
  const ns = await netns(t, 'a')
  const nft = new ExecNft({ prefix: ['ip', 'netns', 'exec', ns] })
  await nft.apply(FOREIGN)
  const foreignBefore = (await listAll(ns))
  await nft.apply(redirectPlan.script)
  const first = tableShape(await nft.listTable('ip', 'egress_router'))
  t.ok(first.present)
  t.same(first.chains.map(c => c.name), ['filter_forward', 'filter_input', 'nat_postrouting', 'nat_prerouting'])
  await nft.apply(redirectPlan.script)
  const second = tableShape(await nft.listTable('ip', 'egress_router'))
  t.equal(JSON.stringify(second), JSON.stringify(first), 'normalised listing identical')
  // the kernel keeps the owner comment on the table and every chain, for cleanup
  const text = await sh(ns, 'nft', 'list', 'table', 'ip', 'egress_router')
  t.equal(text.split('comment "managed by egress-router"').length - 1, 5)

  await nft.deleteTable('ip', 'egress_router')
  await nft.deleteTable('ip', 'egress_router')
  t.equal(await nft.listTable('ip', 'egress_router'), null)
  t.equal(await listAll(ns), foreignBefore, 'foreign tables (and inet egress_router) unchanged after apply, re-apply and delete')
})

t.test('a script with an error leaves the previous ruleset intact', privileged(), async t => {
  const ns = await netns(t, 'b')
  const nft = new ExecNft({ prefix: ['ip', 'netns', 'exec', ns] })
  await nft.apply(redirectPlan.script)
  const before = await listAll(ns)
  // a valid first half (it flushes the table and adds other rules), then a line the kernel refuses
  const broken = proxyPlan.script + 'add rule ip egress_router filter_input iifname "eth0" tcp dport 70000 accept\n'
  const e = await nft.apply(broken).then(() => null, (err: unknown) => err)
  t.ok(e instanceof NftError)
  t.match((e as NftError).stderr, /70000/)
  t.equal(await listAll(ns), before, 'nothing changed, not even the flush')
  await t.rejects(nft.check(broken), NftError)
  await nft.check(proxyPlan.script)
  t.equal(await listAll(ns), before, 'check changes nothing')
})

t.test('a configuration change removes chains the old one made', privileged(), async t => {
  const ns = await netns(t, 'c')
  const nft = new ExecNft({ prefix: ['ip', 'netns', 'exec', ns] })
  await nft.apply(hostPlan.script)
  t.ok(tableShape(await nft.listTable('ip', 'egress_router')).chains.some(c => c.name === 'mark_prerouting'))
  await nft.apply(redirectPlan.script)
  const pod = tableShape(await nft.listTable('ip', 'egress_router'))
  t.notOk(pod.chains.some(c => c.name === 'mark_prerouting'))
  await nft.apply(proxyPlan.script)
  t.same(tableShape(await nft.listTable('ip', 'egress_router')).chains.map(c => c.name), ['filter_forward', 'filter_input', 'nat_postrouting'])
  await nft.apply(redirectPlan.script)
  t.equal(fingerprint(await nft.listTable('ip', 'egress_router')), pod.digest, 'back to the same state')
  await nft.apply(v6Plan.script)
  t.ok(tableShape(await nft.listTable('ip6', 'egress_router')).present, 'the IPv6 script applies too')
})

t.test('drift detection notices flush ruleset, a deleted rule and an added rule', privileged(), async t => {
  const ns = await netns(t, 'd')
  const nft = new ExecNft({ prefix: ['ip', 'netns', 'exec', ns] })
  const read = async () => await nft.listTable('ip', 'egress_router')
  await nft.apply(redirectPlan.script)
  const applied = await read()
  t.equal(describeDrift(applied, await read()), null, 'no drift right after apply')
  t.equal(fingerprint(await read()), fingerprint(applied), 'the fingerprint is stable')

  await sh(ns, 'nft', 'flush', 'ruleset')
  t.equal(describeDrift(applied, await read()), 'table ip egress_router is missing')
  await nft.apply(redirectPlan.script)
  t.equal(describeDrift(applied, await read()), null, 're-apply heals it')

  const listing = await nft.listTable('ip', 'egress_router')
  const drop = listing?.nftables.find(i => {
    const r = i.rule as { chain?: string, comment?: string } | undefined
    return r?.chain === 'filter_forward' && r.comment === 'no new connections from the LAN'
  })?.rule as { handle: number }
  await sh(ns, 'nft', 'delete', 'rule', 'ip', 'egress_router', 'filter_forward', 'handle', String(drop.handle))
  t.equal(describeDrift(applied, await read()),
    'chain filter_forward: rule removed: iifname "macvlan0" counter drop comment "no new connections from the LAN"')
  await nft.apply(redirectPlan.script)

  await sh(ns, 'nft', 'insert', 'rule', 'ip', 'egress_router', 'filter_input', 'tcp', 'dport', '22', 'accept')
  t.equal(describeDrift(applied, await read()), 'chain filter_input: rule added: tcp dport 22 accept')
  await nft.apply(redirectPlan.script)
  t.equal(describeDrift(applied, await read()), null)
})

t.test('probe: version as root, a clear message without CAP_NET_ADMIN', privileged(), async t => {
  const ns = await netns(t, 'e')
  const probe = await new ExecNft({ prefix: ['ip', 'netns', 'exec', ns] }).probe()
  t.match(probe.version, /^\d+\.\d+/)
  const nobody = new ExecNft({ prefix: ['ip', 'netns', 'exec', ns, 'setpriv', '--reuid=65534', '--regid=65534', '--clear-groups', '--inh-caps=-all'] })
  await t.rejects(nobody.probe(), { code: 'ERR_NFT', message: /lacks CAP_NET_ADMIN/ })
})

// ---- real traffic ------------------------------------------------------------------------------------------

/** Starts a TCP server (node) inside a namespace; resolves when it listens. Every connection gets `reply`. */
async function server (t: Test, ns: string, ports: number[], tag: string): Promise<void> {
  const code = `
    const net = require('node:net'); let n = 0; const ports = ${JSON.stringify(ports)};
    for (const p of ports) net.createServer(s => s.end(${JSON.stringify(tag)} + ' ' + s.remoteAddress + ' ' + s.localPort))
      .listen(p, '0.0.0.0', () => { if (++n === ports.length) console.log('ready') })`
  const child = spawn('ip', ['netns', 'exec', ns, process.execPath, '-e', code], { stdio: ['ignore', 'pipe', 'inherit'] })
  t.teardown(() => { child.kill('SIGKILL') })
  await new Promise<void>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`server in ${ns} did not start`)), 10_000)
    child.stdout.on('data', (b: Buffer) => { if (b.toString().includes('ready')) { clearTimeout(timer); resolve() } })
    child.on('exit', c => { clearTimeout(timer); reject(new Error(`server in ${ns} exited ${String(c)}`)) })
  })
}

/** One TCP connection from a namespace: the reply text, or the error code (ECONNREFUSED = reset, TIMEOUT = no answer). */
async function connect (ns: string, host: string, p: number, idleMs = 5000): Promise<string> {
  const code = `
    const s = require('node:net').connect(${p}, ${JSON.stringify(host)}); let d = '';
    s.setTimeout(${idleMs}, () => { console.log('TIMEOUT'); process.exit(0) });
    s.on('data', b => { d += b }); s.on('end', () => console.log(d));
    s.on('error', e => console.log(e.code))`
  return (await sh(ns, process.execPath, '-e', code)).trim()
}

async function counter (ns: string, chain: string, comment: string): Promise<number> {
  const listing = JSON.parse(await sh(ns, 'nft', '-j', 'list', 'chain', 'ip', 'egress_router', chain)) as { nftables: Array<{ rule?: { comment?: string, expr: Array<{ counter?: { packets: number } }> } }> }
  const rule = listing.nftables.find(i => i.rule?.comment === comment)?.rule
  return rule?.expr.find(e => e.counter !== undefined)?.counter?.packets ?? -1
}

t.test('the scripts really DNAT and SNAT: client -> router -> destination', privileged(), async t => {
  const client = await netns(t, 'C')
  const router = await netns(t, 'R')
  const dest = await netns(t, 'D')
  // client c0 198.51.100.2 <-> router eth0 198.51.100.1 (the pod interface)
  // router macvlan0 203.0.113.99 (EGRESS_SOURCE, a veth standing in for the macvlan) <-> destination d0 203.0.113.10
  await run('ip', ['-n', client, 'link', 'add', 'c0', 'type', 'veth', 'peer', 'name', 'eth0', 'netns', router])
  await run('ip', ['-n', router, 'link', 'add', 'macvlan0', 'type', 'veth', 'peer', 'name', 'd0', 'netns', dest])
  for (const [ns, dev, addr] of [[client, 'c0', '198.51.100.2/24'], [router, 'eth0', '198.51.100.1/24'], [router, 'macvlan0', '203.0.113.99/24'], [dest, 'd0', '203.0.113.10/24']] as const) {
    await run('ip', ['-n', ns, 'addr', 'add', addr, 'dev', dev])
    await run('ip', ['-n', ns, 'link', 'set', dev, 'up'])
  }
  await sh(router, 'sysctl', '-qw', 'net.ipv4.ip_forward=1')
  await server(t, dest, [80, 81], 'destination')
  await server(t, router, [81, 9090], 'router')
  const nft = new ExecNft({ prefix: ['ip', 'netns', 'exec', router] })

  // Without our rules the client reaches the router's own listener: what the reject below must prevent.
  t.equal(await connect(client, '198.51.100.1', 81), 'router 198.51.100.2 81')

  await nft.apply(redirectPlan.script)
  t.equal(await connect(client, '198.51.100.1', 80), 'destination 203.0.113.99 80', 'port 80 reaches the destination from EGRESS_SOURCE')
  t.equal(await connect(client, '198.51.100.1', 8080), 'destination 203.0.113.99 80', 'port 8080 is rewritten to 80')
  t.equal(await connect(client, '198.51.100.1', 81), 'ECONNREFUSED', 'a port without a rule gets a reset')
  t.ok(await counter(router, 'filter_input', 'no rule for this port') > 0, 'our reject rule did it')
  t.equal(await connect(client, '198.51.100.1', 9090), 'router 198.51.100.2 9090', 'the health port stays reachable')
  t.equal(await connect(dest, '203.0.113.99', 81, 1500), 'TIMEOUT', 'a new connection from the LAN is dropped')
  t.ok(await counter(router, 'filter_input', 'no new connections from the LAN') > 0, 'our drop rule did it')

  await nft.apply(nftPlan(fallbackConfig, macvlan).script)
  t.equal(await connect(client, '198.51.100.1', 81), 'destination 203.0.113.99 81', 'the fallback takes every other port')
  t.equal(await connect(client, '198.51.100.1', 9090), 'router 198.51.100.2 9090', 'the health port is exempt from the fallback')
  t.equal(await connect(dest, '203.0.113.99', 81, 1500), 'TIMEOUT', 'the LAN still cannot connect in')
})

t.test('host routing: only the mark sends redirected connections through the dedicated table', privileged(), async t => {
  const client = await netns(t, 'C')
  const router = await netns(t, 'R')
  const dest = await netns(t, 'D')
  await run('ip', ['-n', client, 'link', 'add', 'c0', 'type', 'veth', 'peer', 'name', 'eth0', 'netns', router])
  await run('ip', ['-n', router, 'link', 'add', 'macvlan0', 'type', 'veth', 'peer', 'name', 'd0', 'netns', dest])
  // EGRESS_SOURCE as a host address: the main table has no route to the LAN, only ROUTE_TABLE has.
  for (const [ns, dev, addr] of [[client, 'c0', '198.51.100.2/24'], [router, 'eth0', '198.51.100.1/24'], [router, 'macvlan0', '203.0.113.99/32'], [dest, 'd0', '203.0.113.10/24']] as const) {
    await run('ip', ['-n', ns, 'addr', 'add', addr, 'dev', dev])
    await run('ip', ['-n', ns, 'link', 'set', dev, 'up'])
  }
  const { FWMARK, ROUTE_TABLE } = await import('../../src/plan/ruleset.js')
  await run('ip', ['-n', router, 'route', 'add', '203.0.113.0/24', 'dev', 'macvlan0', 'src', '203.0.113.99', 'table', String(ROUTE_TABLE)])
  await run('ip', ['-n', router, 'rule', 'add', 'fwmark', `0x${FWMARK.toString(16)}`, 'lookup', String(ROUTE_TABLE), 'priority', '100'])
  await sh(router, 'sysctl', '-qw', 'net.ipv4.ip_forward=1', 'net.ipv4.conf.all.rp_filter=0', 'net.ipv4.conf.macvlan0.rp_filter=0', 'net.ipv4.conf.default.rp_filter=0')
  await server(t, dest, [80], 'destination')
  const nft = new ExecNft({ prefix: ['ip', 'netns', 'exec', router] })
  const hostRedirect = { ...config({ redirect: { rules: [port(1, 80, '203.0.113.10')], fallback: null } }), routing: 'host' as const }

  await nft.apply(nftPlan({ ...hostRedirect, routing: 'pod' }, macvlan).script)
  t.not(await connect(client, '198.51.100.1', 80), 'destination 203.0.113.99 80', 'without the mark the main table has no way out')
  await nft.apply(nftPlan(hostRedirect, macvlan).script)
  t.equal(await connect(client, '198.51.100.1', 80), 'destination 203.0.113.99 80', 'the marked connection leaves through ROUTE_TABLE')
})
