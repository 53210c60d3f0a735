/**
 * ACL rules for tests, through the real EGRESS_HTTP_PROXY_DESTINATION parser. Blank lines are dropped first, so a
 * rule's line number is its position among the rules (a template literal may start with a newline).
 */
import type { AclRule } from '../../src/config/types.js'
import { parseHttpAcl } from '../../src/config/http-acl.js'
import { formatIssue } from '../../src/errors.js'

export function aclRules (text: string): AclRule[] {
  const parsed = parseHttpAcl(text.split('\n').map(l => l.trim()).filter(l => l !== '').join('\n'))
  if (!parsed.ok) throw new Error(`test ACL does not parse:\n${parsed.issues.map(formatIssue).join('\n')}`)
  return parsed.value
}
