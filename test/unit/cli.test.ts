/**
 * The command line as a user meets it: a child process, its stdout, stderr and exit code.
 */
import { execFile } from 'node:child_process'
import { fileURLToPath } from 'node:url'
import t from 'tap'
import { VARIABLES } from '../../src/config/env.js'

const BIN = fileURLToPath(new URL('../../bin/egress-router', import.meta.url))

async function cli (args: string[], env: Record<string, string> = {}): Promise<{ code: number | null, stdout: string, stderr: string }> {
  return await new Promise((resolve) => {
    execFile(process.execPath, [BIN, ...args], { timeout: 30_000, env: { PATH: process.env.PATH ?? '', ...env } }, (err, stdout, stderr) => {
      resolve({ code: err === null ? 0 : typeof err.code === 'number' ? err.code : null, stdout, stderr })
    })
  })
}

t.test('--help of run lists every variable with its flag and default', async (t) => {
  const r = await cli(['run', '--help'])
  t.equal(r.code, 0)
  const help = r.stdout.replace(/\s+/g, ' ')
  for (const v of VARIABLES) {
    t.match(help, `env: ${v.name}`, `${v.name} is in the help`)
    t.match(help, v.flag.split(' ')[0] as string)
    if (v.default !== undefined && v.default !== '') t.match(help, `${v.name}, default: ${v.default})`, `${v.name} shows its default`)
  }
  for (const sub of ['plan', 'cleanup', 'lab']) {
    const h = await cli([sub, '--help'])
    t.equal(h.code, 0, `${sub} --help`)
  }
})

t.test('unit-test mode prints the OpenShift NAT rules and touches nothing', async (t) => {
  const r = await cli([], { EGRESS_ROUTER_MODE: 'unit-test', EGRESS_SOURCE: '1.2.3.4', EGRESS_GATEWAY: '1.1.1.1', EGRESS_DESTINATION: '80 tcp 10.4.5.6\n8080 tcp 10.7.8.9 80\n10.1.2.3' })
  t.equal(r.code, 0, r.stderr)
  t.equal(r.stdout, [
    '-A PREROUTING -i eth0 -p tcp --dport 80 -j DNAT --to-destination 10.4.5.6',
    '-A PREROUTING -i eth0 -p tcp --dport 8080 -j DNAT --to-destination 10.7.8.9:80',
    '-A PREROUTING -i eth0 -j DNAT --to-destination 10.1.2.3',
    '-A POSTROUTING -j SNAT --to-source 1.2.3.4',
    ''
  ].join('\n'))
  t.equal(r.stderr, '')
})

t.test('invalid configuration: exit 2, one line per problem on stderr, nothing on stdout', async (t) => {
  const r = await cli(['plan'], { EGRESS_SOURCE: '999.1.1.1', EGRESS_GATEWAY: '192.0.2.1', EGRESS_DESTINATION: '80 tcp 10.4.5.6\n\n80 sctp 10.4.5.6' })
  t.equal(r.code, 2)
  t.equal(r.stdout, '')
  t.match(r.stderr, /^EGRESS_SOURCE: '999\.1\.1\.1': /m)
  t.match(r.stderr, "EGRESS_DESTINATION line 3: '80 sctp 10.4.5.6': protocol must be tcp or udp")
  t.equal(r.stderr.trim().split('\n').length, 2, 'every problem, each once')
})

t.test('flags override the environment', async (t) => {
  const env = { EGRESS_ROUTER_MODE: 'unit-test', EGRESS_SOURCE: '1.2.3.4', EGRESS_GATEWAY: '1.1.1.1', EGRESS_DESTINATION: '10.1.2.3' }
  const r = await cli(['run', '--source', '5.6.7.8'], env)
  t.equal(r.code, 0, r.stderr)
  t.match(r.stdout, '-A POSTROUTING -j SNAT --to-source 5.6.7.8')
})

t.test('an unknown flag is a usage error (exit 2)', async (t) => {
  const r = await cli(['run', '--no-such-flag'])
  t.equal(r.code, 2)
  t.match(r.stderr, 'unknown option')
})

t.test('plan prints the exact nft script and changes nothing (reads links over rtnetlink only)', async (t) => {
  const r = await cli(['plan', '--interface', 'lo', '--pod-interface', 'lo', '--macvlan-name', 'ertestmv0'], { EGRESS_SOURCE: '192.0.2.99/24', EGRESS_GATEWAY: '192.0.2.1', EGRESS_DESTINATION: '80 tcp 203.0.113.10' })
  t.equal(r.code, 0, r.stderr)
  t.match(r.stdout, 'create ertestmv0 type macvlan mode bridge link lo')
  t.match(r.stdout, 'add table ip egress_router { comment "managed by egress-router"; }')
  t.match(r.stdout, 'dnat to 203.0.113.10:80')
  const json = await cli(['plan', '--json', '--interface', 'lo', '--pod-interface', 'lo', '--macvlan-name', 'ertestmv0'], { EGRESS_SOURCE: '192.0.2.99/24', EGRESS_GATEWAY: '192.0.2.1', EGRESS_DESTINATION: '80 tcp 203.0.113.10' })
  t.equal(json.code, 0)
  const parsed = JSON.parse(json.stdout) as { plan: { nft: { script: string } } }
  t.match(r.stdout, parsed.plan.nft.script.trimEnd(), 'the text plan shows the very script apply pipes to nft')
  t.notMatch(r.stdout, 'workers:', 'one process: no workers line')
})

t.test('plan lists the dns-proxy forwards the kernel relays after the listeners', async (t) => {
  const env = { EGRESS_ROUTER_MODE: 'dns-proxy', EGRESS_SOURCE: '192.0.2.99/24', EGRESS_GATEWAY: '192.0.2.1', EGRESS_DNS_PROXY_DESTINATION: '5432 203.0.113.10\n8443 db.example.com 443', EGRESS_DNS_PROXY_FORWARDING: 'kernel' }
  const r = await cli(['plan', '--interface', 'lo', '--pod-interface', 'lo', '--macvlan-name', 'ertestmv0'], env)
  t.equal(r.code, 0, r.stderr)
  t.match(r.stdout, 'dnat to 203.0.113.10:5432 comment "EGRESS_DNS_PROXY_DESTINATION line 1: 5432 tcp"')
  t.match(r.stdout, /kernel forwards \(DNAT rules, EGRESS_DNS_PROXY_FORWARDING=kernel; no listener\):\n {2}tcp 5432 -> 203\.0\.113\.10:5432 {4}# line 1\n/)
  t.notMatch(r.stdout, /dns-forward \S+:5432/, 'no listener for the kernel forward')
  const flag = await cli(['plan', '--interface', 'lo', '--pod-interface', 'lo', '--macvlan-name', 'ertestmv0', '--dns-proxy-forwarding', 'proxy'], env)
  t.notMatch(flag.stdout, 'kernel forwards', 'the flag overrides the variable: every forward proxied')
  t.notMatch(flag.stdout, 'dnat', 'and nothing DNATed')
})

t.test('plan says how many workers a proxy mode forks', async (t) => {
  const env = { EGRESS_ROUTER_MODE: 'dns-proxy', EGRESS_SOURCE: '192.0.2.99/24', EGRESS_GATEWAY: '192.0.2.1', EGRESS_DNS_PROXY_DESTINATION: '5432 203.0.113.10' }
  const args = ['plan', '--interface', 'lo', '--pod-interface', 'lo', '--macvlan-name', 'ertestmv0']
  const three = await cli([...args, '--workers', '3'], env)
  t.equal(three.code, 0, three.stderr)
  t.match(three.stdout, /\nworkers: 3, forked by the daemon/)
  const auto = await cli([...args, '--workers', 'auto'], env)
  t.match(auto.stdout, /\nworkers: \d+ \(auto: one per CPU, \d+ here\)/)
  const json = JSON.parse((await cli([...args, '--json', '--workers', '2'], env)).stdout) as { workers: number, config: { workers: number } }
  t.same([json.workers, json.config.workers], [2, 2])
  const redirect = await cli(['plan', '--workers', '2'], { EGRESS_SOURCE: '192.0.2.99', EGRESS_GATEWAY: '192.0.2.1', EGRESS_DESTINATION: '203.0.113.10' })
  t.equal(redirect.code, 2, 'more than one worker in redirect mode is a configuration error')
  t.match(redirect.stderr, "EGRESS_WORKERS: '2': applies to the http-proxy and dns-proxy modes")
})
