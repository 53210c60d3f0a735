/**
 * The OpenShift egress http proxy's own table (egress_http_proxy_test.go). Our ACL is rendered as
 * the squid ACL that script generated, and must come out the same; rejected inputs stay rejected.
 */
import t from 'tap'
import { readFileSync } from 'node:fs'
import { parseConfig } from '../../src/config/config.js'
import { formatIssue } from '../../src/errors.js'
import type { AclRule } from '../../src/config/types.js'

interface Case { in: string, squid?: string, issues?: string[], openshift?: string, why?: string }
const table = JSON.parse(readFileSync(new URL('./fixtures/openshift-egress-http-proxy.json', import.meta.url), 'utf8')) as Record<string, Case[]>

/** Our rules as egress-http-proxy.sh's generate_acls wrote them (a test oracle, not product code). */
function squid (rules: readonly AclRule[]): string {
  let out = ''
  let n = 0
  let any = false
  for (const rule of rules) {
    n++
    if (rule.match.kind === 'any') { any = true; continue }
    const m = rule.match
    const acl = m.kind === 'cidr'
      ? `dst ${m.cidr.address}${m.cidr.prefix === (m.cidr.family === 4 ? 32 : 128) ? '' : `/${m.cidr.prefix}`}`
      : m.kind === 'domain' ? `dstdomain .${m.domain}` : `dstdomain ${m.name}`
    out += `\nacl dest${n} ${acl}\nhttp_access ${rule.action} dest${n}\n`
  }
  return `${out}\n${any ? 'http_access allow all' : 'http_access deny all'}\n`
}

function run (text: string): { squid: string } | { issues: string[] } {
  const r = parseConfig({ EGRESS_ROUTER_MODE: 'http-proxy', EGRESS_SOURCE: '192.0.2.99', EGRESS_GATEWAY: '192.0.2.1', EGRESS_HTTP_PROXY_DESTINATION: text })
  if (!r.ok) return { issues: r.issues.map(formatIssue) }
  return { squid: squid(r.config.httpProxy!.acl) }
}

t.test('accepted: the same ACL', async t => {
  for (const c of table.accepted!) t.same(run(c.in), { squid: c.squid }, JSON.stringify(c.in))
})

for (const group of ['rejected', 'scriptRejected'] as const) {
  t.test(`${group}: rejected, with a line that names variable, line and text`, async t => {
    for (const c of table[group]!) t.same(run(c.in), { issues: c.issues }, `${c.openshift} (${JSON.stringify(c.in)})`)
  })
}

t.test('differences, each with its reason', async t => {
  for (const c of table.differences!) {
    t.same(run(c.in), c.squid !== undefined ? { squid: c.squid } : { issues: c.issues }, c.why ?? JSON.stringify(c.in))
  }
})
