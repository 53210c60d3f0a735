/**
 * Every EGRESS_HTTP_PROXY_DESTINATION rule form, end to end: the real daemon, real curl (plain and CONNECT),
 * dnsmasq answering the test names. For each request: the HTTP status the client got, the rule the daemon
 * logged for its decision, and whether the destination saw the request (from EGRESS_SOURCE, on the address
 * the ACL checked) — or saw nothing at all.
 */
import t, { type Test } from 'tap'
import type { RouterProcess } from '../../src/lab/router-process.js'
import { LAB, type Topology } from '../../src/lab/topology.js'
import { waitFor } from '../../src/lab/wait.js'
import { privileged } from '../helpers/privileged.js'
import { distMissing } from '../helpers/router-e2e.js'
import { addrs, bracket, curl, peerHost, proxyTopology, startDest, startDnsmasq, startProxy, type Dest, type DestEvent, type Family, type Hosts } from '../helpers/http-proxy-e2e.js'

const missing = distMissing()
if (missing !== null) t.fail(missing)

const v4 = LAB.v4
const v6 = LAB.v6
const [v4b, v4c] = v4.destExtra
const [v6b, v6c] = v6.destExtra

const HOSTS_V4: Hosts = {
  'exact.lab.example': [v4.dest],
  'sub.exact.lab.example': [v4.dest],
  'other.lab.example': [v4.dest],
  'wild.example': [v4.dest],
  'a.wild.example': [v4.dest],
  'x.y.wild.example': [v4.dest],
  'evilwild.example': [v4.dest],
  'deny.wild.example': [v4.dest],
  'c.wild.example': [v4c],
  'multi.wild.example': [v4.dest, v4c],
  'eleven.lab.example': [v4b],
  'twelve.lab.example': [v4c]
}

interface Case {
  /** host as written in the URL (a name, an IPv4 address, a bracketed IPv6 address) */
  host: string
  tunnel?: boolean
  /** allowed: the destination address it must reach; denied: the status */
  expect: { reach: string } | { status: 403 | 503 }
  /** the rule text the daemon must log for its decision; null = the default deny; undefined = not checked */
  rule?: string | null
  /** curl --request-target: the request line exactly as written (curl would normalise the URL's host) */
  requestTarget?: string
}

let serial = 0

interface Run { topo: Topology, dest: Dest, router: RouterProcess, family: Family }

/** The first ACL decision the daemon logged after its first `from` log lines. */
async function decisionAfter (router: RouterProcess, from: number, what: string): Promise<{ action: string, rule: string | null } | null> {
  const line = await waitFor(() => router.logs.slice(from).find((l) => l.event === 'acl'), { what: `the daemon's ACL decision for ${what}`, timeoutMs: 3_000 }).catch(() => null)
  return line === null ? null : { action: String(line.action), rule: line.ruleText as string | null }
}

async function check (t: Test, run: Run, c: Case): Promise<void> {
  const { topo, dest, router, family } = run
  const a = addrs(family)
  const marker = `/acl-${++serial}`
  const how = `${c.tunnel === true ? 'CONNECT' : 'GET'} ${c.requestTarget ?? c.host}`
  const from = router.logs.length
  const args = c.requestTarget === undefined ? [] : ['--request-target', c.requestTarget.replace('PORT', String(dest.port)) + marker]
  const r = await curl(topo, { family, url: `http://${c.host}:${dest.port}${marker}`, tunnel: c.tunnel, args })
  const status = c.tunnel === true ? r.connectStatus : r.status
  if ('reach' in c.expect) {
    t.equal(status, 200, `${how}: allowed${status === 200 ? '' : ` (${r.stderr.trim()} ${r.body.trim().slice(0, 200)})`}`)
    if (c.tunnel === true) t.equal(r.status, 200, `${how}: and the request through the tunnel answered`)
    const req = await dest.waitFor<Extract<DestEvent, { event: 'request' }>>((e) => e.event === 'request' && e.url === marker, `${how} at the destination`).catch(() => null)
    t.ok(req, `${how}: the destination saw the request`)
    if (req !== null) {
      t.equal(peerHost(req.peer), a.source, `${how}: from EGRESS_SOURCE`)
      t.equal(peerHost(req.local), c.expect.reach, `${how}: on ${c.expect.reach}`)
    }
  } else {
    t.equal(status, c.expect.status, `${how}: refused with ${c.expect.status} (${r.body.trim().slice(0, 200)})`)
    if (c.tunnel === true) t.not(r.exit, 0, `${how}: curl got no tunnel`)
  }
  if (c.rule !== undefined) {
    t.same(await decisionAfter(router, from, how), { action: 'reach' in c.expect ? 'allow' : 'deny', rule: c.rule },
      `${how}: decided by ${c.rule === null ? 'the default' : `'${c.rule}'`}`)
  }
}

/**
 * Runs the cases: the allowed ones, then the refused ones, then one allowed tunnel as a barrier — after it,
 * the destination must have accepted exactly one more connection than before the refused ones, and seen
 * none of their requests.
 */
async function checkAll (t: Test, run: Run, cases: readonly Case[], barrier: string): Promise<void> {
  for (const c of cases.filter((x) => 'reach' in x.expect)) await check(t, run, c)
  const before = run.dest.connections()
  const first = serial + 1
  for (const c of cases.filter((x) => !('reach' in x.expect))) await check(t, run, c)
  const last = serial
  const fence = `/fence-${++serial}`
  const r = await curl(run.topo, { family: run.family, url: `http://${barrier}:${run.dest.port}${fence}`, tunnel: true })
  t.equal(r.status, 200, 'the barrier request went through')
  await run.dest.waitFor((e) => e.event === 'request' && e.url === fence, 'the barrier request at the destination')
  const leaked = run.dest.events.filter((e) => e.event === 'request' && Number(/^\/acl-(\d+)$/.exec(e.url)?.[1] ?? 0) >= first && Number(/^\/acl-(\d+)$/.exec(e.url)?.[1]) <= last)
  t.same(leaked, [], 'the destination saw none of the refused requests')
  t.equal(run.dest.connections() - before, 1, 'and no connection for them: only the barrier\'s')
}

async function setUp (t: Test, topo: Topology, dest: Dest, acl: string, family: Family = 'v4'): Promise<Run> {
  const router = await startProxy(t, topo, acl, family)
  return { topo, dest, router, family }
}

t.test('IPv4 ACL rule forms', privileged(), async (t) => {
  const topo = await proxyTopology(t)
  await startDnsmasq(t, topo, HOSTS_V4)
  const dest = await startDest(t, topo)

  await t.test('exact host, wildcard (the bare domain too), IP address, ! deny; no *: the rest is denied', async (t) => {
    const acl = ['!deny.wild.example', '*.wild.example', 'exact.lab.example', `!${v4c}`, v4b].join('\n')
    const run = await setUp(t, topo, dest, acl)
    await checkAll(t, run, [
      { host: 'exact.lab.example', expect: { reach: v4.dest }, rule: 'exact.lab.example' },
      { host: 'exact.lab.example', tunnel: true, expect: { reach: v4.dest }, rule: 'exact.lab.example' },
      { host: 'wild.example', expect: { reach: v4.dest }, rule: '*.wild.example' },
      { host: 'a.wild.example', expect: { reach: v4.dest }, rule: '*.wild.example' },
      { host: 'a.wild.example', tunnel: true, expect: { reach: v4.dest }, rule: '*.wild.example' },
      { host: 'x.y.wild.example', expect: { reach: v4.dest }, rule: '*.wild.example' },
      { host: v4b, expect: { reach: v4b }, rule: v4b },
      { host: v4b, tunnel: true, expect: { reach: v4b }, rule: v4b },
      // allowed by its address: address rules look at what a name resolves to
      { host: 'eleven.lab.example', expect: { reach: v4b }, rule: v4b },
      // an exact host is not a domain
      { host: 'sub.exact.lab.example', expect: { status: 403 }, rule: null },
      { host: 'other.lab.example', expect: { status: 403 }, rule: null },
      { host: 'other.lab.example', tunnel: true, expect: { status: 403 }, rule: null },
      // a wildcard is a whole label suffix, not a string suffix
      { host: 'evilwild.example', expect: { status: 403 }, rule: null },
      { host: 'deny.wild.example', expect: { status: 403 }, rule: '!deny.wild.example' },
      { host: 'deny.wild.example', tunnel: true, expect: { status: 403 }, rule: '!deny.wild.example' },
      { host: v4c, expect: { status: 403 }, rule: `!${v4c}` },
      { host: v4c, tunnel: true, expect: { status: 403 }, rule: `!${v4c}` },
      // nothing allows .10 by address
      { host: v4.dest, expect: { status: 403 }, rule: null },
      // allowed by name, but it resolves into a denied address
      { host: 'c.wild.example', expect: { status: 403 }, rule: `!${v4c}` },
      { host: 'c.wild.example', tunnel: true, expect: { status: 403 }, rule: `!${v4c}` },
      // one of its addresses is denied: the name is not trusted for the others either
      { host: 'multi.wild.example', expect: { status: 403 }, rule: `!${v4c}` },
      // allowed by name, but it does not exist
      { host: 'nx.wild.example', expect: { status: 503 } }
    ], 'exact.lab.example')
  })

  await t.test('CIDR: an allowed range before a denied one', async (t) => {
    const run = await setUp(t, topo, dest, '203.0.113.8/30\n!203.0.113.0/24\n')
    await checkAll(t, run, [
      { host: v4.dest, expect: { reach: v4.dest }, rule: '203.0.113.8/30' },
      { host: v4b, expect: { reach: v4b }, rule: '203.0.113.8/30' },
      { host: v4b, tunnel: true, expect: { reach: v4b }, rule: '203.0.113.8/30' },
      { host: 'exact.lab.example', expect: { reach: v4.dest }, rule: '203.0.113.8/30' },
      { host: v4c, expect: { status: 403 }, rule: '!203.0.113.0/24' },
      { host: v4c, tunnel: true, expect: { status: 403 }, rule: '!203.0.113.0/24' },
      { host: 'twelve.lab.example', expect: { status: 403 }, rule: '!203.0.113.0/24' },
      { host: 'multi.wild.example', expect: { status: 403 }, rule: '!203.0.113.0/24' }
    ], v4.dest)
  })

  await t.test('! deny before * (allow the rest)', async (t) => {
    const run = await setUp(t, topo, dest, `!*.wild.example\n!${v4c}\n*\n`)
    await checkAll(t, run, [
      { host: 'exact.lab.example', expect: { reach: v4.dest }, rule: '*' },
      { host: 'other.lab.example', expect: { reach: v4.dest }, rule: '*' },
      { host: 'other.lab.example', tunnel: true, expect: { reach: v4.dest }, rule: '*' },
      { host: v4.dest, expect: { reach: v4.dest }, rule: '*' },
      { host: 'eleven.lab.example', expect: { reach: v4b }, rule: '*' },
      { host: 'wild.example', expect: { status: 403 }, rule: '!*.wild.example' },
      { host: 'a.wild.example', expect: { status: 403 }, rule: '!*.wild.example' },
      { host: 'a.wild.example', tunnel: true, expect: { status: 403 }, rule: '!*.wild.example' },
      { host: v4c, expect: { status: 403 }, rule: `!${v4c}` },
      { host: 'twelve.lab.example', expect: { status: 403 }, rule: `!${v4c}` }
    ], 'other.lab.example')
  })
})

t.test('IPv6 ACL rule forms, with EGRESS_SOURCE 2001:db8:1::99/64', privileged(), async (t) => {
  const topo = await proxyTopology(t, 'v6')
  await startDnsmasq(t, topo, { 'v6.lab.example': [v6.dest], 'bad6.lab.example': [v6c], 'both6.lab.example': [v6.dest, v6c] }, 'v6')
  const dest = await startDest(t, topo)
  const run = await setUp(t, topo, dest, `!${v6c}\n${v6b}\n2001:db8:d::/64\n`, 'v6')
  await checkAll(t, run, [
    { host: bracket(v6.dest), expect: { reach: v6.dest }, rule: '2001:db8:d::/64' },
    { host: bracket(v6.dest), tunnel: true, expect: { reach: v6.dest }, rule: '2001:db8:d::/64' },
    { host: bracket(v6b), expect: { reach: v6b }, rule: v6b },
    { host: 'v6.lab.example', expect: { reach: v6.dest }, rule: '2001:db8:d::/64' },
    { host: 'v6.lab.example', tunnel: true, expect: { reach: v6.dest }, rule: '2001:db8:d::/64' },
    { host: bracket(v6c), expect: { status: 403 }, rule: `!${v6c}` },
    { host: bracket(v6c), tunnel: true, expect: { status: 403 }, rule: `!${v6c}` },
    // other spellings of the denied address, sent exactly so
    { host: bracket(v6.dest), requestTarget: 'http://[2001:DB8:D:0:0:0:0:12]:PORT', expect: { status: 403 }, rule: `!${v6c}` },
    { host: bracket(v6.dest), requestTarget: 'http://[2001:0db8:000d::0012]:PORT', expect: { status: 403 }, rule: `!${v6c}` },
    { host: 'bad6.lab.example', expect: { status: 403 }, rule: `!${v6c}` },
    { host: 'both6.lab.example', expect: { status: 403 }, rule: `!${v6c}` },
    // an IPv4 destination matches no rule here
    { host: v4.dest, expect: { status: 403 }, rule: null }
  ], bracket(v6.dest))
})
