/**
 * The OpenShift egress dns proxy's own table (egress_dns_proxy_test.go). Each forward must be the
 * frontend port and backend `target:port check [resolvers …]` haproxy was given; rejected inputs
 * stay rejected.
 */
import t from 'tap'
import { readFileSync } from 'node:fs'
import { withPort } from '../../src/config/addr.js'
import { parseConfig } from '../../src/config/config.js'
import { formatIssue } from '../../src/errors.js'

interface Case { dest: string, frontends?: string[], backends?: string[], issues?: string[], openshift?: string, why?: string, source?: string, gateway?: string }
const table = JSON.parse(readFileSync(new URL('./fixtures/openshift-egress-dns-proxy.json', import.meta.url), 'utf8')) as Record<string, Case[]>

function run (c: Case): { frontends: string[], backends: string[] } | { issues: string[] } {
  const r = parseConfig({
    EGRESS_ROUTER_MODE: 'dns-proxy',
    EGRESS_SOURCE: c.source ?? '192.0.2.99',
    EGRESS_GATEWAY: c.gateway ?? '192.0.2.1',
    EGRESS_DNS_PROXY_DESTINATION: c.dest
  })
  if (!r.ok) return { issues: r.issues.map(formatIssue) }
  const forwards = r.config.dnsProxy!.forwards
  return {
    frontends: forwards.map(f => `:${f.port}`),
    backends: forwards.map(f => f.target.kind === 'ip'
      ? `${withPort(f.target.address, f.targetPort)} check`
      : `${f.target.name}:${f.targetPort} check resolvers dns-resolver`)
  }
}

t.test('accepted: the same frontends and backends', async t => {
  for (const c of table.accepted!) {
    const got = run(c)
    t.ok('frontends' in got, JSON.stringify(c.dest))
    if (!('frontends' in got)) continue
    t.same(got.frontends, c.frontends, JSON.stringify(c.dest))
    t.equal(got.backends.length, c.backends!.length)
    // the old backend line starts with `server dest1` or `server-template dest N` (how many
    // addresses the name had); what must match is the target it ends with
    got.backends.forEach((b, i) => t.ok(c.backends![i]!.endsWith(` ${b}`), `${c.backends![i]} ends with ${b}`))
  }
})

t.test('rejected, with a line that names variable, line and text', async t => {
  for (const c of table.rejected!) t.same(run(c), { issues: c.issues }, `${c.openshift} (${JSON.stringify(c.dest)})`)
})

t.test('differences, each with its reason', async t => {
  for (const c of table.differences!) {
    const got = run(c)
    if (c.issues !== undefined) t.same(got, { issues: c.issues }, c.why ?? JSON.stringify(c.dest))
    else t.same('backends' in got ? got.backends : got, c.backends!.map(b => `${b} check`), c.why ?? JSON.stringify(c.dest))
  }
})
