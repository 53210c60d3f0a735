/**
 * `EGRESS_ROUTER_MODE=unit-test`: the NAT rules exactly as openshift/origin's egress-router.sh
 * prints them in its own unit-test mode (gen_iptables_rules): the rule lines of an
 * iptables-restore `*nat` table, without the `*nat`/chain/`COMMIT` framing (the old script added
 * that only when it piped them to iptables-restore), each line ending in a newline:
 *
 *   -A PREROUTING -i eth0 -p tcp --dport 80 -j DNAT --to-destination 10.4.5.6
 *   -A PREROUTING -i eth0 -p tcp --dport 8080 -j DNAT --to-destination 10.7.8.9:80
 *   -A PREROUTING -i eth0 -j DNAT --to-destination 10.1.2.3
 *   -A POSTROUTING -j SNAT --to-source 1.2.3.4
 *
 * Rules come in the order of the lines, the fallback last; SNAT uses EGRESS_SOURCE without its
 * prefix. The old script always wrote `-i eth0`; here it is EGRESS_POD_INTERFACE, whose default is
 * eth0. IPv6 rules come out in ip6tables-restore form (`--to-destination [2001:db8::1]:80`).
 *
 * One known difference: the old script wrote `ip:port` whenever the line had a remote port, even
 * one equal to the local port (`80 tcp 10.4.5.6 80` → `10.4.5.6:80`). PortRedirect does not record
 * whether the remote port was written, so `:port` appears only when it differs; the two
 * rules are equivalent in iptables.
 */
import { withPort } from '../config/addr.js'
import type { Config, PortRedirect } from '../config/types.js'

function portRule (podInterface: string, rule: PortRedirect): string {
  const to = rule.targetPortGiven ? withPort(rule.target, rule.targetPort) : rule.target.address
  return `-A PREROUTING -i ${podInterface} -p ${rule.protocol} --dport ${rule.port} -j DNAT --to-destination ${to}`
}

/** The unit-test output for a validated config; a config without redirect rules prints only the SNAT rule. */
export function unitTestOutput (config: Config): string {
  const lines: string[] = []
  const redirect = config.redirect
  if (redirect !== null) {
    for (const rule of redirect.rules) lines.push(portRule(config.podInterface, rule))
    if (redirect.fallback !== null) {
      lines.push(`-A PREROUTING -i ${config.podInterface} -j DNAT --to-destination ${redirect.fallback.target.address}`)
    }
  }
  lines.push(`-A POSTROUTING -j SNAT --to-source ${config.source.address}`)
  return lines.map(line => `${line}\n`).join('')
}
