/**
 * The OpenShift egress router's own unit-test table (egress_router_test.go), plus behaviour read
 * from egress-router.sh, plus SPEC.md's deliberate differences: EGRESS_ROUTER_MODE=unit-test must
 * print byte-for-byte what the old script printed, and reject what it rejected.
 */
import t from 'tap'
import { readFileSync } from 'node:fs'
import { parseConfig } from '../../src/config/config.js'
import { formatIssue } from '../../src/errors.js'
import { unitTestOutput } from '../../src/plan/iptables-compat.js'

interface Case { source?: string, gateway?: string, dest: string, output?: string, issues?: string[], openshift?: string, openshift_output?: string, why?: string, spec?: string, note?: string }
const table = JSON.parse(readFileSync(new URL('./fixtures/openshift-egress-router.json', import.meta.url), 'utf8')) as Record<string, Case[]>

function run (c: Case): { output: string } | { issues: string[] } {
  const r = parseConfig({
    EGRESS_ROUTER_MODE: 'unit-test',
    EGRESS_SOURCE: c.source ?? '1.2.3.4',
    EGRESS_GATEWAY: c.gateway ?? '1.1.1.1',
    EGRESS_DESTINATION: c.dest
  })
  return r.ok ? { output: unitTestOutput(r.config) } : { issues: r.issues.map(formatIssue) }
}

for (const group of ['accepted', 'scriptAccepted'] as const) {
  t.test(`${group}: the same NAT rules, byte for byte`, async t => {
    t.ok(table[group]!.length > 0)
    for (const c of table[group]!) t.same(run(c), { output: c.output }, c.why ?? c.note ?? JSON.stringify(c.dest))
  })
}

for (const group of ['rejected', 'scriptRejected'] as const) {
  t.test(`${group}: rejected, with a line that names variable, line and text`, async t => {
    t.ok(table[group]!.length > 0)
    for (const c of table[group]!) t.same(run(c), { issues: c.issues }, `${c.openshift} (${JSON.stringify(c.dest)})`)
  })
}

t.test('differences: SPEC.md\'s three deliberate differences', async t => {
  for (const c of table.differences!) {
    t.same(run(c), c.output !== undefined ? { output: c.output } : { issues: c.issues }, `${c.spec}: ${JSON.stringify(c.dest)}`)
  }
})

t.test('the pod interface replaces the hard-coded eth0 only when configured', async t => {
  const r = parseConfig({ EGRESS_ROUTER_MODE: 'unit-test', EGRESS_SOURCE: '1.2.3.4', EGRESS_GATEWAY: '1.1.1.1', EGRESS_DESTINATION: '80 tcp 10.4.5.6\n10.1.2.3', EGRESS_POD_INTERFACE: 'net1' })
  t.ok(r.ok)
  if (r.ok) {
    t.equal(unitTestOutput(r.config), '-A PREROUTING -i net1 -p tcp --dport 80 -j DNAT --to-destination 10.4.5.6\n-A PREROUTING -i net1 -j DNAT --to-destination 10.1.2.3\n-A POSTROUTING -j SNAT --to-source 1.2.3.4\n')
  }
})

t.test('unit-test output of a config without redirect rules is the SNAT rule alone', async t => {
  const r = parseConfig({ EGRESS_ROUTER_MODE: 'http-proxy', EGRESS_SOURCE: '1.2.3.4', EGRESS_GATEWAY: '1.1.1.1', EGRESS_HTTP_PROXY_DESTINATION: '*' })
  t.ok(r.ok)
  if (r.ok) t.equal(unitTestOutput(r.config), '-A POSTROUTING -j SNAT --to-source 1.2.3.4\n')
})
