/**
 * The pure parts of the redirect drain: reading `conntrack -L`, telling live flows from finished ones, and the nft
 * text that refuses new redirected connections (validated by the real `nft --check` when nft and root are there).
 */
import { execFileSync, spawnSync } from 'node:child_process'
import t from 'tap'
import { isLiveFlow, parseConntrackList, type ConntrackFlow } from '../../../src/apply/conntrack.js'
import { refuseNewScript } from '../../../src/lifecycle/redirect-drain.js'

const LISTING = [
  'tcp      6 431999 ESTABLISHED src=198.51.100.2 dst=198.51.100.1 sport=40000 dport=80 src=203.0.113.10 dst=192.0.2.99 sport=80 dport=40000 [ASSURED] mark=25970 use=1',
  'tcp      6 117 TIME_WAIT src=198.51.100.2 dst=198.51.100.1 sport=40001 dport=80 src=203.0.113.10 dst=192.0.2.99 sport=80 dport=40001 [ASSURED] mark=25970 use=1',
  'tcp      6 8 CLOSE src=198.51.100.2 dst=198.51.100.1 sport=40002 dport=80 src=203.0.113.10 dst=192.0.2.99 sport=80 dport=40002 mark=25970 use=1',
  'tcp      6 57 CLOSE_WAIT src=198.51.100.2 dst=198.51.100.1 sport=40003 dport=80 src=203.0.113.10 dst=192.0.2.99 sport=80 dport=40003 [ASSURED] mark=25970 use=1',
  'udp      17 118 src=198.51.100.2 dst=198.51.100.1 sport=5000 dport=53 src=203.0.113.10 dst=192.0.2.99 sport=53 dport=5000 [ASSURED] mark=25970 use=1',
  'udp      17 20 src=198.51.100.2 dst=198.51.100.1 sport=5001 dport=53 [UNREPLIED] src=203.0.113.10 dst=192.0.2.99 sport=53 dport=5001 mark=25970 use=1',
  'udp      17 29 src=198.51.100.2 dst=198.51.100.1 sport=5002 dport=53 [UNREPLIED] src=203.0.113.10 dst=192.0.2.99 sport=53 dport=5002 mark=25970 use=1',
  ''
].join('\n')

t.test('conntrack -L lines: protocol, remaining timeout, TCP state, assured', async t => {
  const flows = parseConntrackList(LISTING)
  t.same(flows.map((f) => [f.protocol, f.timeoutS, f.state, f.assured]), [
    ['tcp', 431999, 'ESTABLISHED', true],
    ['tcp', 117, 'TIME_WAIT', true],
    ['tcp', 8, 'CLOSE', false],
    ['tcp', 57, 'CLOSE_WAIT', true],
    ['udp', 118, null, true],
    ['udp', 20, null, false],
    ['udp', 29, null, false]
  ])
  t.same(parseConntrackList('conntrack v1.4.7 (conntrack-tools): 0 flow entries have been shown.\n'), [], 'the summary line is not a flow')
  t.same(parseConntrackList(''), [])
})

t.test('live: TCP until TIME_WAIT/CLOSE; UDP while a packet passed within the last seconds', async t => {
  const udp = { unreplied: 30, stream: 120 }
  const live = parseConntrackList(LISTING).map((f) => isLiveFlow(f, udp))
  t.same(live, [true, false, false, true, true, false, true], 'established and half-closed TCP wait; finished TCP and quiet UDP do not')
  const quiet: ConntrackFlow = { protocol: 'udp', timeoutS: 110, state: null, assured: true }
  t.equal(isLiveFlow(quiet, udp), false, 'an assured UDP flow silent for 10 s is over')
  t.equal(isLiveFlow(quiet, udp, 15), true, 'unless the window is longer')
  t.equal(isLiveFlow({ protocol: 'icmp', timeoutS: 29, state: null, assured: false }, udp), true, 'other protocols: by the unreplied timeout')
})

t.test('the drain refuses new redirected connections first in filter_forward: tcp with a reset, the rest with ICMP', async t => {
  t.equal(refuseNewScript('ip', 'egress_router'), [
    'insert rule ip egress_router filter_forward ct state new ct mark 0x00006572 counter reject with icmp port-unreachable comment "draining: no new redirected connections"',
    'insert rule ip egress_router filter_forward ct state new ct mark 0x00006572 meta l4proto tcp counter reject with tcp reset comment "draining: no new redirected connections"',
    ''
  ].join('\n'))
  t.match(refuseNewScript('ip6', 'egress_router'), /reject with icmpv6 port-unreachable/, 'IPv6: icmpv6')
})

const canCheck = typeof process.getuid === 'function' && process.getuid() === 0 && spawnSync('sh', ['-c', 'command -v nft && command -v unshare'], { stdio: 'ignore' }).status === 0
t.test('nft accepts the drain script on top of a host-routing table', { skip: canCheck ? false : 'needs root, nft and unshare' }, async t => {
  for (const family of ['ip', 'ip6'] as const) {
    const table = [
      `add table ${family} egress_router`,
      `add chain ${family} egress_router filter_forward { type filter hook forward priority filter; policy accept; }`,
      refuseNewScript(family, 'egress_router')
    ].join('\n')
    // a private network namespace: the check runs against an empty ruleset and touches nothing of the host
    const out = execFileSync('unshare', ['-n', 'nft', '-c', '-f', '-'], { input: table, encoding: 'utf8' })
    t.equal(out, '', `${family}: nft -c accepts it`)
  }
})
