/**
 * The namespace test bed on the real kernel: it builds as drawn, routes through the router once
 * forwarding is on, carries real traffic to the destination, and leaves nothing behind — also
 * when a test fails, the process exits early or is signalled.
 */
import t, { type Test } from 'tap'
import { spawn, type ChildProcess } from 'node:child_process'
import { existsSync, mkdirSync, readFileSync, rmSync } from 'node:fs'
import { fileURLToPath } from 'node:url'
import { run } from '../../src/lab/exec.js'
import { buildTopology, LAB, listNamespaces, liveNamespaces, sweepStale, wiringSteps, type NsRole, type Topology } from '../../src/lab/topology.js'
import { waitFor } from '../../src/lab/wait.js'
import { privileged } from '../helpers/privileged.js'
import { hostOf, httpGet, startPeerServer, tcpRequest, udpRequest } from '../helpers/peers.js'

const PREFIX = 'ertopo-'
/** Children's topologies get a prefix of this process's own, so sweepStale here never meets another run's. */
const CHILD_PREFIX = `${PREFIX}t${process.pid}-`
const HOLD = fileURLToPath(new URL('../fixtures/peers/hold-topology.ts', import.meta.url))

async function built (t: Test, opts: Parameters<typeof buildTopology>[0] = {}): Promise<Topology> {
  const topo = await buildTopology({ prefix: PREFIX, ...opts })
  t.teardown(topo.destroy)
  return topo
}

interface IpAddr { ifname: string, operstate: string, flags: string[], addr_info: Array<{ family: string, local: string, prefixlen: number, tentative?: boolean }> }

async function addrs (topo: Topology, role: NsRole): Promise<IpAddr[]> {
  const r = await topo.execOk(role, ['ip', '-j', 'addr', 'show'])
  return JSON.parse(r.stdout) as IpAddr[]
}

function cidrsOf (links: IpAddr[], dev: string, family: 'inet' | 'inet6'): string[] {
  const link = links.find((l) => l.ifname === dev)
  return (link?.addr_info ?? []).filter((a) => a.family === family && !a.local.startsWith('fe80:'))
    .map((a) => `${a.local}/${a.prefixlen}`).sort()
}

async function sysctl (topo: Topology, role: NsRole, key: string): Promise<string> {
  return (await topo.execOk(role, ['sysctl', '-n', key])).stdout.trim()
}

async function forwardingOn (topo: Topology): Promise<void> {
  await topo.execOk('router', ['sysctl', '-q', '-w', 'net.ipv4.ip_forward=1',
    ...(topo.ipv6 ? ['net.ipv6.conf.all.forwarding=1'] : [])])
}

/** The LAN knows nothing of the client network; tests that route without NAT teach it. */
async function lanRoutesClients (topo: Topology): Promise<void> {
  await topo.execOk('lan', ['ip', 'route', 'add', LAB.v4.clientNet, 'via', LAB.v4.routerLan])
  if (topo.ipv6) await topo.execOk('lan', ['ip', '-6', 'route', 'add', LAB.v6.clientNet, 'via', LAB.v6.routerLan])
}

/** Gone, or a zombie waiting for init (which adopted it) to reap it. */
function isDead (pid: number): boolean {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8')
    return stat.slice(stat.lastIndexOf(')') + 2).startsWith('Z')
  } catch {
    return true
  }
}

async function assertGone (t: Test, names: readonly string[], what: string): Promise<void> {
  const left = (await listNamespaces()).filter((n) => names.includes(n))
  t.same(left, [], what)
}

t.test('the plan wires every address of the drawing and nothing on the host side', async t => {
  const ns = { client: 'c', router: 'r', lan: 'l', dest: 'd' } as const
  const steps = wiringSteps(ns, { ipv6: true, precreateMacvlan: { name: 'macvlan0' } })
  const text = steps.map((s) => s.argv.join(' '))
  for (const cmd of [
    'ip -n c link add c0 type veth peer name eth0 netns r',
    'ip -n r link add lan0 type veth peer name r0 netns l',
    'ip -n l link add d0 type veth peer name d1 netns d',
    'ip -n r addr add 192.0.2.2/24 dev lan0',
    'ip -n d addr add 203.0.113.12/24 dev d1',
    'ip -n d addr add 2001:db8:d::12/64 dev d1 nodad',
    'ip -n r route add default via 192.0.2.1 dev lan0',
    'ip -n r route add ::/0 via 2001:db8:1::1 dev lan0',
    'ip -n r link add macvlan0 link lan0 type macvlan mode bridge',
    'ip netns exec r sysctl -q -w net.ipv6.conf.all.accept_dad=0 net.ipv6.conf.default.accept_dad=0 net.ipv4.ip_forward=0 net.ipv6.conf.all.forwarding=0',
    'ip netns exec l sysctl -q -w net.ipv6.conf.all.accept_dad=0 net.ipv6.conf.default.accept_dad=0 net.ipv4.ip_forward=1 net.ipv6.conf.all.forwarding=1'
  ]) t.ok(text.includes(cmd), cmd)
  t.notOk(steps.some((s) => s.argv[0] === 'ip' && s.argv[1] !== '-n' && s.argv[1] !== 'netns'), 'every command names its namespace')
  t.notOk(text.some((c) => c.includes(' route add 198.51.100.0/24')), 'the LAN gets no route to the client network')
  const dadIndex = text.findIndex((c) => c.includes('accept_dad=0'))
  const firstLink = text.findIndex((c) => c.includes(' link add '))
  t.ok(dadIndex >= 0 && dadIndex < firstLink, 'DAD is off before the first link exists')
  t.notOk(wiringSteps(ns, {}).some((s) => s.argv.join(' ').includes('2001:db8')), 'no IPv6 unless asked')
})

t.test('options are checked before anything is created', async t => {
  await t.rejects(buildTopology({ prefix: 'bad prefix/' }), { code: 'ERR_LAB_OPTIONS', message: /prefix 'bad prefix\/'/ })
  await t.rejects(buildTopology({ prefix: PREFIX, precreateMacvlan: { name: 'a-name-longer-than-15' } }), /interface name/)
  await t.rejects(buildTopology({ prefix: PREFIX, precreateMacvlan: { name: 'lan0' } }), /already used/)
  await t.rejects(buildTopology({ prefix: PREFIX, precreateMacvlan: { name: 'mv0', mode: 'nope' as 'bridge' } }), /mode 'nope'/)
})

t.test('a build that fails half-way deletes what it made, and only that', privileged(), async t => {
  const first = await buildTopology({ prefix: PREFIX })
  await first.destroy()
  // Names are prefix + pid + counter: occupy the next topology's lan namespace.
  const n = Number(/-(\d+)$/.exec(first.id)?.[1])
  const squatter = `${PREFIX}${process.pid}-${n + 1}-lan`
  await run(['ip', 'netns', 'add', squatter])
  t.teardown(async () => { await run(['ip', 'netns', 'del', squatter]) })
  const err = await buildTopology({ prefix: PREFIX }).then(() => null, (e: Error & { code: string }) => e)
  t.match(err, { code: 'ERR_LAB_BUILD', message: new RegExp(`failed at "create namespace ${squatter}"`) })
  const listed = await listNamespaces()
  t.ok(listed.includes(squatter), 'the namespace it did not create is left alone')
  t.same(listed.filter((x) => x.startsWith(`${PREFIX}${process.pid}-${n + 1}-`) && x !== squatter), [], 'the ones it created are gone')
  t.same(liveNamespaces().filter((x) => x.startsWith(`${PREFIX}${process.pid}-${n + 1}-`)), [])
})

t.test('the topology builds as drawn', privileged(), async t => {
  const topo = await built(t)
  const names = Object.values(topo.ns)
  t.equal(new Set(names).size, 4)
  for (const n of names) t.match(n, new RegExp(`^${PREFIX}${process.pid}-\\d+-(client|router|lan|dest)$`))
  const listed = await listNamespaces()
  for (const n of names) t.ok(listed.includes(n), `${n} exists`)

  const client = await addrs(topo, 'client')
  const router = await addrs(topo, 'router')
  const lan = await addrs(topo, 'lan')
  const dest = await addrs(topo, 'dest')
  t.same(cidrsOf(client, 'c0', 'inet'), ['198.51.100.2/24'])
  t.same(cidrsOf(router, 'eth0', 'inet'), ['198.51.100.1/24'])
  t.same(cidrsOf(router, 'lan0', 'inet'), ['192.0.2.2/24'])
  t.same(cidrsOf(lan, 'r0', 'inet'), ['192.0.2.1/24'])
  t.same(cidrsOf(lan, 'd0', 'inet'), ['203.0.113.1/24'])
  t.same(cidrsOf(dest, 'd1', 'inet'), ['203.0.113.10/24', '203.0.113.11/24', '203.0.113.12/24'])
  t.same(cidrsOf(router, 'lan0', 'inet6'), [], 'no IPv6 unless asked')
  for (const [role, links] of [['client', client], ['router', router], ['lan', lan], ['dest', dest]] as const) {
    const lo = links.find((l) => l.ifname === 'lo')
    t.ok(lo?.flags.includes('UP'), `loopback up in ${role}`)
    t.equal(links.length, role === 'router' || role === 'lan' ? 3 : 2, `${role}: only the drawn links`)
  }

  const route = JSON.parse((await topo.execOk('router', ['ip', '-j', 'route', 'show', 'default'])).stdout) as Array<{ gateway: string, dev: string }>
  t.same(route.map((r) => [r.gateway, r.dev]), [[LAB.v4.gateway, 'lan0']], 'router: default via the gateway on lan0')
  t.equal(await sysctl(topo, 'router', 'net.ipv4.ip_forward'), '0', 'forwarding off in the router')
  t.equal(await sysctl(topo, 'lan', 'net.ipv4.ip_forward'), '1', 'forwarding on in the LAN')

  // Forwarding off: the client's packets stop at the router.
  const ping = await topo.exec('client', ['ping', '-n', '-c', '1', '-W', '1', LAB.v4.gateway])
  t.not(ping.code, 0, 'the client cannot reach the gateway while the router does not forward')
  // The LAN has no way back to the client network: only translated traffic can return.
  const back = await topo.exec('lan', ['ip', 'route', 'get', LAB.v4.client])
  t.not(back.code, 0, 'the LAN has no route to the client network')
  t.match(back.stderr, /unreachable/i)
})

t.test('with forwarding on in the router the client reaches the gateway through it', privileged(), async t => {
  const topo = await built(t)
  await forwardingOn(topo)
  await lanRoutesClients(topo)
  const ping = await topo.exec('client', ['ping', '-n', '-c', '1', '-W', '5', LAB.v4.gateway])
  t.equal(ping.code, 0, `ping: ${ping.stdout}${ping.stderr}`)
  t.match(ping.stdout, /ttl=63/, 'one hop on the way: through the router')
})

t.test('a real server in the dest namespace sees connections from the LAN', privileged(), async t => {
  const topo = await built(t)
  const server = await startPeerServer(topo, { tcp: { mode: 'echo' }, udp: true, http: true })
  t.teardown(server.stop)
  t.ok((server.tcpPort ?? 0) > 0 && (server.udpPort ?? 0) > 0 && (server.httpPort ?? 0) > 0, 'port 0 became real ports')

  const tcp = await tcpRequest(topo, { ns: 'lan', host: LAB.v4.dest, port: server.tcpPort as number, send: 'hello, destination' })
  if (!tcp.ok) throw new Error(`tcp: ${tcp.error.message}`)
  t.equal(hostOf(tcp.local), LAB.v4.destGateway, 'the LAN host uses its address on the dest network')
  t.equal(tcp.greeting?.peer, tcp.local, 'the server told the client its own address')
  t.equal(tcp.body.text, 'hello, destination', 'echoed')
  const conn = await server.waitForReport((r) => r.event === 'connection', { what: 'the TCP connection report' })
  t.equal(conn.peer, tcp.local)
  t.equal(conn.local, `${LAB.v4.dest}:${String(server.tcpPort)}`)
  const closed = await server.waitForReport((r) => r.event === 'closed', { what: 'the TCP close report' })
  if (closed.event !== 'closed') throw new Error('unreachable')
  t.same(closed.received, { bytes: tcp.sent.bytes, sha256: tcp.sent.sha256 }, 'the server got exactly what was sent')

  const udp = await udpRequest(topo, { ns: 'lan', host: LAB.v4.dest, port: server.udpPort as number, send: 'dgram' })
  if (!udp.ok) throw new Error(`udp: ${udp.error.message}`)
  t.equal(udp.greeting?.peer, udp.local)
  t.equal(udp.greeting?.sha256, udp.sent.sha256)
  const dgram = await server.waitForReport((r) => r.event === 'datagram', { what: 'the datagram report' })
  t.equal(dgram.peer, udp.local)

  const http = await httpGet(topo, { ns: 'lan', url: `http://${LAB.v4.dest}:${String(server.httpPort)}/probe` })
  t.equal(http.status, 200, http.stderr)
  const seen = JSON.parse(http.body) as { peer: string, url: string }
  t.equal(hostOf(seen.peer), LAB.v4.destGateway)
  t.equal(seen.url, '/probe')
  const req = await server.waitForReport((r) => r.event === 'request', { what: 'the HTTP request report' })
  t.equal(req.peer, seen.peer)

  await t.rejects(startPeerServer(topo, { tcp: { port: server.tcpPort as number } }), /exited before listening.*EADDRINUSE/,
    'a server that cannot listen says why, without waiting out its deadline')
})

t.test('checksums hold both ways for a megabyte', privileged(), async t => {
  const topo = await built(t)
  const sink = await startPeerServer(topo, { tcp: { mode: 'sink' } })
  t.teardown(sink.stop)
  const up = await tcpRequest(topo, { ns: 'lan', host: LAB.v4.dest, port: sink.tcpPort as number, send: 1 << 20 })
  if (!up.ok) throw new Error(up.error.message)
  t.same(JSON.parse(up.body.text ?? ''), up.sent, 'the server hashed what the client sent')

  const source = await startPeerServer(topo, { host: LAB.v4.destExtra[0], tcp: { mode: { send: 1 << 20 } } })
  t.teardown(source.stop)
  const down = await tcpRequest(topo, { ns: 'lan', host: LAB.v4.destExtra[0], port: source.tcpPort as number })
  if (!down.ok) throw new Error(down.error.message)
  t.equal(down.body.bytes, 1 << 20)
  const closed = await source.waitForReport((r) => r.event === 'closed', { what: 'the close report' })
  if (closed.event !== 'closed') throw new Error('unreachable')
  t.equal(down.body.sha256, closed.sent.sha256, 'the client got what the server sent')
})

t.test('a client that cannot reach the server says so, in time', privileged(), async t => {
  const topo = await built(t)
  // Forwarding is off in the router: nothing from the client gets through.
  const r = await tcpRequest(topo, { host: LAB.v4.dest, port: 9, timeoutMs: 500 })
  t.equal(r.ok, false)
  if (!r.ok) t.equal(r.error.code, 'ETIMEDOUT')
  const refused = await tcpRequest(topo, { ns: 'lan', host: LAB.v4.dest, port: 9, timeoutMs: 2_000 })
  t.equal(refused.ok, false)
  if (!refused.ok) t.equal(refused.error.code, 'ECONNREFUSED')
})

t.test('destroy() stops every process, deletes every namespace, and is idempotent', privileged(), async t => {
  const topo = await buildTopology({ prefix: PREFIX, dnsResolvConf: 'nameserver 203.0.113.10\n' })
  t.teardown(topo.destroy)
  const names = Object.values(topo.ns)
  const tracked = topo.spawn('router', ['sleep', '600'])
  // One the topology does not know about, detached from everything: destroy() must find it too.
  const bg = await topo.execOk('dest', ['sh', '-c', 'sleep 600 </dev/null >/dev/null 2>&1 & echo $!'])
  const untracked = Number(bg.stdout.trim())
  t.ok(untracked > 1)
  t.ok(existsSync(topo.netnsEtcDir ?? '/nonexistent'), '/etc/netns/<router> exists')
  t.ok(liveNamespaces().includes(topo.ns.router))

  await Promise.all([topo.destroy(), topo.destroy()])
  await topo.destroy()
  await assertGone(t, names, 'no namespace left behind')
  t.ok(tracked.exitCode !== null || tracked.signalCode !== null, 'the spawned process was stopped')
  t.ok(isDead(untracked), 'the untracked process is gone too')
  t.notOk(existsSync(topo.netnsEtcDir ?? '/nonexistent'), '/etc/netns/<router> removed')
  t.notOk(liveNamespaces().some((n) => names.includes(n)))
  await t.rejects(topo.exec('client', ['true']), { code: 'ERR_LAB_DESTROYED' })
})

t.test('two topologies built in parallel do not collide', privileged(), async t => {
  const [a, b] = await Promise.all([built(t), built(t)])
  t.equal(new Set([...Object.values(a.ns), ...Object.values(b.ns)]).size, 8, 'eight distinct namespaces')
  const [sa, sb] = await Promise.all([startPeerServer(a), startPeerServer(b)])
  t.teardown(sa.stop)
  t.teardown(sb.stop)
  const [ra, rb] = await Promise.all([
    tcpRequest(a, { ns: 'lan', host: LAB.v4.dest, port: sa.tcpPort as number, send: 'to a' }),
    tcpRequest(b, { ns: 'lan', host: LAB.v4.dest, port: sb.tcpPort as number, send: 'to b' })
  ])
  t.equal(ra.ok && ra.body.text, 'to a')
  t.equal(rb.ok && rb.body.text, 'to b')
  // Each server saw only its own topology's client: the same addresses, different kernels.
  await sa.waitForReport((r) => r.event === 'closed', { what: 'a closed' })
  await sb.waitForReport((r) => r.event === 'closed', { what: 'b closed' })
  t.same(sa.reports.filter((r) => r.event === 'connection').length, 1)
  t.same(sb.reports.filter((r) => r.event === 'connection').length, 1)
  const namesA = Object.values(a.ns)
  const destroyA = a.destroy // as t.teardown() gets it: detached from the object
  await destroyA()
  await assertGone(t, namesA, 'a is gone')
  const r = await tcpRequest(b, { ns: 'lan', host: LAB.v4.dest, port: sb.tcpPort as number, send: 'still here' })
  t.equal(r.ok && r.body.text, 'still here', 'destroying one leaves the other working')
})

t.test('the IPv6 variant routes as well', privileged(), async t => {
  const topo = await built(t, { ipv6: true })
  const router = await addrs(topo, 'router')
  t.same(cidrsOf(router, 'lan0', 'inet6'), ['2001:db8:1::2/64'])
  t.same(cidrsOf(router, 'eth0', 'inet6'), ['2001:db8:c::1/64'])
  t.same(cidrsOf(await addrs(topo, 'dest'), 'd1', 'inet6'), ['2001:db8:d::10/64', '2001:db8:d::11/64', '2001:db8:d::12/64'])
  for (const role of ['client', 'router', 'lan', 'dest'] as const) {
    const tentative = (await addrs(topo, role)).flatMap((l) => l.addr_info).filter((a) => a.tentative === true)
    t.same(tentative, [], `${role}: no tentative address`)
  }
  t.equal(await sysctl(topo, 'router', 'net.ipv6.conf.default.accept_dad'), '0', 'DAD off for links made later (the macvlan)')
  t.equal(await sysctl(topo, 'router', 'net.ipv6.conf.all.forwarding'), '0')
  t.equal(await sysctl(topo, 'lan', 'net.ipv6.conf.all.forwarding'), '1')

  await forwardingOn(topo)
  await lanRoutesClients(topo)
  const ping = await topo.exec('client', ['ping', '-6', '-n', '-c', '1', '-W', '5', LAB.v6.gateway])
  t.equal(ping.code, 0, `ping: ${ping.stdout}${ping.stderr}`)
  t.match(ping.stdout, /ttl=63/, 'one hop: through the router')

  const server = await startPeerServer(topo, { host: LAB.v6.dest, tcp: true, udp: true })
  t.teardown(server.stop)
  const tcp = await tcpRequest(topo, { host: LAB.v6.dest, port: server.tcpPort as number, send: 'v6' })
  if (!tcp.ok) throw new Error(tcp.error.message)
  t.equal(hostOf(tcp.greeting?.peer ?? ''), LAB.v6.client, 'routed, untranslated: the server sees the client')
  t.equal(tcp.body.text, 'v6')
  const udp = await udpRequest(topo, { ns: 'lan', host: LAB.v6.dest, port: server.udpPort as number })
  if (!udp.ok) throw new Error(udp.error.message)
  t.equal(hostOf(udp.greeting?.peer ?? ''), LAB.v6.destGateway)
})

t.test('precreateMacvlan makes the link a CNI plugin would: on lan0, down, no address', privileged(), async t => {
  const topo = await built(t, { ipv6: true, precreateMacvlan: { name: 'macvlan0', mode: 'private' } })
  t.same(topo.macvlan, { name: 'macvlan0', mode: 'private' })
  const r = await topo.execOk('router', ['ip', '-j', '-d', 'addr', 'show', 'dev', 'macvlan0'])
  const [link] = JSON.parse(r.stdout) as Array<IpAddr & { link: string, linkinfo: { info_kind: string, info_data: { mode: string } } }>
  t.equal(link?.linkinfo.info_kind, 'macvlan')
  t.equal(link?.linkinfo.info_data.mode, 'private')
  t.equal(link?.link, 'lan0', 'parent is the node NIC')
  t.notOk(link?.flags.includes('UP'), 'down')
  t.same(link?.addr_info, [], 'no address')
  const plain = await built(t)
  t.equal((await plain.exec('router', ['ip', 'link', 'show', 'dev', 'macvlan0'])).code === 0, false, 'absent unless asked')
})

t.test('dnsResolvConf is the router namespace\'s /etc/resolv.conf, and only its', privileged(), async t => {
  const text = '# lab\nnameserver 203.0.113.10\nnameserver 2001:db8:d::10\n'
  const topo = await built(t, { dnsResolvConf: text })
  t.equal((await topo.execOk('router', ['cat', '/etc/resolv.conf'])).stdout, text)
  t.not((await topo.execOk('client', ['cat', '/etc/resolv.conf'])).stdout, text, 'the other namespaces keep the host\'s')
})

t.test('exec() results and deadlines', privileged(), async t => {
  const topo = await built(t)
  const r = await topo.exec('dest', ['sh', '-c', 'echo out; echo err >&2; exit 3'])
  t.same([r.code, r.stdout, r.stderr, r.timedOut], [3, 'out\n', 'err\n', false])
  await t.rejects(topo.execOk('dest', ['false']), { code: 'ERR_COMMAND' })
  const slow = await topo.exec('dest', ['sleep', '30'], { timeoutMs: 200 })
  t.equal(slow.timedOut, true)
  t.equal(slow.signal, 'SIGKILL')
  const missing = await run(['/nonexistent/binary']).then(() => 'ran', (e: { code: string }) => e.code)
  t.equal(missing, 'ERR_COMMAND_SPAWN')
  const wait = await waitFor(async () => false, { what: 'something that never happens', timeoutMs: 100 }).catch((e: Error) => e)
  t.match(wait, { code: 'ERR_WAIT_TIMEOUT', message: /something that never happens.*last value: false/ })
})

// ---------------------------------------------------------------------------------------------
// Teardown when things go wrong, checked on a child process (as a test runner or an operator would).

function childRun (mode: string): { child: ChildProcess, names: Promise<string[]>, done: Promise<{ code: number | null, signal: NodeJS.Signals | null }> } {
  const loader = process.execArgv.filter((a) => a.includes('@tapjs/typescript'))
  const child = spawn(process.execPath, [...loader, HOLD, mode, CHILD_PREFIX], { stdio: ['ignore', 'pipe', 'pipe'] })
  let stderr = ''
  child.stdout?.resume()
  child.stderr?.setEncoding('utf8')
  const names = new Promise<string[]>((resolve, reject) => {
    child.stderr?.on('data', (s: string) => {
      stderr += s
      const m = /\{"names":.*\}/.exec(stderr)
      if (m !== null) resolve((JSON.parse(m[0]) as { names: string[] }).names)
    })
    child.once('exit', () => reject(new Error(`child exited before building: ${stderr}`)))
  })
  const done = new Promise<{ code: number | null, signal: NodeJS.Signals | null }>((resolve) => {
    child.once('exit', (code, signal) => resolve({ code, signal }))
  })
  return { child, names, done }
}

async function bounded<T> (p: Promise<T>, what: string, ms = 30_000): Promise<T> {
  let out: { v: T } | undefined
  p.then((v) => { out = { v } }, () => {})
  await waitFor(() => out !== undefined, { what, timeoutMs: ms })
  return (out as { v: T }).v
}

t.test('a failure inside a subtest still tears down', privileged(), async t => {
  const { child, names, done } = childRun('throw-in-subtest')
  t.teardown(() => { child.kill('SIGKILL') })
  const built = await bounded(names, 'the child to build its topology')
  t.equal(built.length, 4)
  const end = await bounded(done, 'the child to exit')
  t.equal(end.code, 1, 'the child test failed')
  await assertGone(t, built, 'its namespaces were deleted by the teardown')
})

t.test('process.exit() without destroy() still tears down', privileged(), async t => {
  const { child, names, done } = childRun('exit')
  t.teardown(() => { child.kill('SIGKILL') })
  const built = await bounded(names, 'the child to build its topology')
  t.same(await bounded(done, 'the child to exit'), { code: 3, signal: null })
  await assertGone(t, built, 'the exit handler deleted the namespaces')
})

for (const signal of ['SIGTERM', 'SIGINT'] as const) {
  t.test(`${signal} tears down, then the process dies of it`, privileged(), async t => {
    const { child, names, done } = childRun('wait')
    t.teardown(() => { child.kill('SIGKILL') })
    const built = await bounded(names, 'the child to build its topology and start a server')
    const listed = await listNamespaces()
    t.ok(built.every((n) => listed.includes(n)), 'built')
    child.kill(signal)
    t.same(await bounded(done, 'the child to exit'), { code: null, signal }, 'the default action still happens')
    await assertGone(t, built, 'the signal handler deleted the namespaces')
  })
}

t.test('sweepStale deletes what a killed process left, and nothing alive', privileged(), async t => {
  const mine = await built(t)
  const { child, names, done } = childRun('wait')
  t.teardown(() => { child.kill('SIGKILL') })
  const orphaned = await bounded(names, 'the child to build its topology')
  child.kill('SIGKILL')
  await bounded(done, 'the child to die')
  const listed = await listNamespaces()
  t.ok(orphaned.every((n) => listed.includes(n)), 'SIGKILL leaves the namespaces behind')
  t.teardown(async () => { for (const n of orphaned) await run(['ip', 'netns', 'del', n]) })

  const swept = await sweepStale(CHILD_PREFIX)
  t.same([...swept].sort(), [...orphaned].sort(), 'exactly the dead process\'s namespaces')
  await assertGone(t, orphaned, 'swept')
  t.same(await sweepStale(CHILD_PREFIX), [], 'nothing more to sweep')
  // Its names match PREFIX + a pid that is alive (this one): not stale.
  const sweptAll = await sweepStale(PREFIX)
  t.notOk(sweptAll.some((n) => Object.values(mine.ns).includes(n)), 'a live topology is not swept')
  const after = await listNamespaces()
  t.ok(Object.values(mine.ns).every((n) => after.includes(n)), 'a live topology is left alone')
})

t.test('keep() leaves the topology in place after exit, for sweepStale to find later', privileged(), async t => {
  const { child, names, done } = childRun('keep')
  t.teardown(() => { child.kill('SIGKILL') })
  const kept = await bounded(names, 'the child to build its topology')
  t.teardown(async () => { for (const n of kept) await run(['ip', 'netns', 'del', n]) })
  t.same(await bounded(done, 'the child to exit'), { code: 0, signal: null })
  const listed = await listNamespaces()
  t.ok(kept.every((n) => listed.includes(n)), 'still there after the process exited')
  const etcDir = `/etc/netns/${kept.find((n) => n.endsWith('-router')) ?? ''}`
  t.ok(existsSync(etcDir), 'its /etc/netns directory stays too')
  // And a directory whose namespace is already gone, as a crash between the two deletions leaves.
  const orphanDir = `/etc/netns/${CHILD_PREFIX}${String(child.pid)}-9-router`
  mkdirSync(orphanDir, { recursive: true })
  t.teardown(() => { rmSync(orphanDir, { recursive: true, force: true }) })
  t.same([...await sweepStale(CHILD_PREFIX)].sort(), [...kept].sort())
  await assertGone(t, kept, 'swept')
  t.notOk(existsSync(etcDir), 'with its /etc/netns directory')
  t.notOk(existsSync(orphanDir), 'and the orphaned directory')
})

t.test('every topology above was destroyed by its own teardown, not left to the exit handler', privileged(), async t => {
  t.same(liveNamespaces(), [])
  const mine = (await listNamespaces()).filter((n) => n.startsWith(`${PREFIX}${process.pid}-`) || n.startsWith(CHILD_PREFIX))
  t.same(mine, [])
})
