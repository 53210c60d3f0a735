import t from 'tap'
import { Option } from 'commander'
import { VARIABLES, readRawSettings } from '../../../src/config/env.js'

const SPEC_TABLE = [
  'EGRESS_ROUTER_MODE', 'EGRESS_SOURCE', 'EGRESS_GATEWAY', 'EGRESS_DESTINATION', 'EGRESS_HTTP_PROXY_DESTINATION',
  'EGRESS_DNS_PROXY_DESTINATION', 'EGRESS_INTERFACE', 'EGRESS_MACVLAN_NAME', 'EGRESS_MACVLAN_MODE', 'EGRESS_MACVLAN_MAC',
  'EGRESS_POD_INTERFACE', 'EGRESS_ROUTING', 'EGRESS_HTTP_PROXY_PORT', 'EGRESS_HTTP_PROXY_CONNECT_PORTS',
  'EGRESS_HTTP_PROXY_ACCESS_LOG', 'EGRESS_HTTP_PROXY_CLIENTS', 'EGRESS_HEALTH_ADDRESS', 'EGRESS_WORKERS', 'EGRESS_DNS_PROXY_FORWARDING', 'EGRESS_DRAIN_TIMEOUT', 'EGRESS_DNS_MIN_TTL', 'EGRESS_DNS_MAX_TTL',
  'EGRESS_DNS_MAX_STALE', 'EGRESS_ROUTER_DEBUG', 'EGRESS_DNS_PROXY_DEBUG', 'EGRESS_LOG_LEVEL',
  'EGRESS_DESTINATION_FILE', 'EGRESS_HTTP_PROXY_DESTINATION_FILE', 'EGRESS_DNS_PROXY_DESTINATION_FILE'
]

const noFiles = (path: string): string => { throw new Error(`unexpected read of ${path}`) }

t.test('VARIABLES has every variable of the SPEC table once, with a kebab-case flag', async t => {
  t.same(VARIABLES.map(v => v.name).sort(), [...SPEC_TABLE].sort())
  for (const v of VARIABLES) {
    const kebab = v.name.replace(/^EGRESS_/, '').toLowerCase().replaceAll('_', '-')
    t.match(v.flag, new RegExp(`^--${kebab} (<[^ ]+>|\\[[^ ]+\\])$`), v.name)
    t.ok(v.description.length > 10, `${v.name} has a description`)
    const option = new Option(v.flag, v.description)
    t.equal(option.long, `--${kebab}`, `${v.name}: commander reads the flag`)
    t.ok(option.required || option.optional, `${v.name}: the flag takes a value`)
  }
  t.equal(VARIABLES.find(v => v.name === 'EGRESS_HTTP_PROXY_PORT')?.flag, '--http-proxy-port <port>')
  t.same(VARIABLES.filter(v => v.file !== undefined).map(v => [v.name, v.file]), [
    ['EGRESS_DESTINATION_FILE', 'EGRESS_DESTINATION'],
    ['EGRESS_HTTP_PROXY_DESTINATION_FILE', 'EGRESS_HTTP_PROXY_DESTINATION'],
    ['EGRESS_DNS_PROXY_DESTINATION_FILE', 'EGRESS_DNS_PROXY_DESTINATION']
  ])
  const defaults = Object.fromEntries(VARIABLES.filter(v => v.default !== undefined).map(v => [v.name, v.default]))
  t.same(defaults, {
    EGRESS_ROUTER_MODE: 'legacy', EGRESS_MACVLAN_NAME: 'macvlan0', EGRESS_MACVLAN_MODE: 'bridge', EGRESS_MACVLAN_MAC: 'stable',
    EGRESS_POD_INTERFACE: 'eth0', EGRESS_ROUTING: 'pod', EGRESS_HTTP_PROXY_PORT: '8080', EGRESS_HTTP_PROXY_CONNECT_PORTS: '*',
    EGRESS_HTTP_PROXY_ACCESS_LOG: 'on', EGRESS_HEALTH_ADDRESS: ':9090', EGRESS_WORKERS: '1', EGRESS_DNS_PROXY_FORWARDING: 'proxy', EGRESS_DRAIN_TIMEOUT: '25s', EGRESS_DNS_MIN_TTL: '2s', EGRESS_DNS_MAX_TTL: '300s',
    EGRESS_DNS_MAX_STALE: '24h', EGRESS_LOG_LEVEL: 'info'
  })
})

t.test('flags override env; unknown variables are not carried; empty strings are kept', async t => {
  const r = readRawSettings(
    { EGRESS_SOURCE: '192.0.2.1', EGRESS_GATEWAY: '192.0.2.254', EGRESS_HEALTH_ADDRESS: '', HOME: '/root', EGRESS_BOGUS: 'x' },
    { EGRESS_SOURCE: '192.0.2.2', EGRESS_ROUTER_MODE: undefined },
    noFiles
  )
  t.same(r, { settings: { EGRESS_SOURCE: '192.0.2.2', EGRESS_GATEWAY: '192.0.2.254', EGRESS_HEALTH_ADDRESS: '' } })
  t.ok('settings' in r && Object.isFrozen(r.settings))
})

t.test('X_FILE: the content goes under X, the path stays under X_FILE', async t => {
  const reads: string[] = []
  const r = readRawSettings(
    { EGRESS_DESTINATION_FILE: '/etc/egress/destination', EGRESS_DNS_PROXY_DESTINATION: '' },
    { EGRESS_DNS_PROXY_DESTINATION_FILE: '/cfg/dns' },
    path => { reads.push(path); return `content of ${path}` }
  )
  t.same(r, {
    settings: {
      EGRESS_DESTINATION: 'content of /etc/egress/destination',
      EGRESS_DESTINATION_FILE: '/etc/egress/destination',
      EGRESS_DNS_PROXY_DESTINATION: 'content of /cfg/dns',
      EGRESS_DNS_PROXY_DESTINATION_FILE: '/cfg/dns'
    }
  })
  t.same(reads, ['/etc/egress/destination', '/cfg/dns'])
})

t.test('an empty X_FILE is as if unset', async t => {
  t.same(readRawSettings({ EGRESS_DESTINATION_FILE: '', EGRESS_DESTINATION: '10.1.2.3' }, {}, noFiles), { settings: { EGRESS_DESTINATION: '10.1.2.3' } })
})

t.test('both X and X_FILE, and unreadable files: every problem, naming variable and path', async t => {
  const r = readRawSettings(
    { EGRESS_DESTINATION: '10.1.2.3', EGRESS_DESTINATION_FILE: '/a', EGRESS_HTTP_PROXY_DESTINATION_FILE: '/missing' },
    { EGRESS_DNS_PROXY_DESTINATION_FILE: '/denied' },
    path => {
      const err = new Error(path === '/missing' ? `ENOENT: no such file or directory, open '${path}'` : `EACCES: permission denied, open '${path}'`)
      throw err
    }
  )
  t.same(r, {
    issues: [
      { variable: 'EGRESS_DESTINATION_FILE', line: 0, text: '/a', message: 'set either EGRESS_DESTINATION or EGRESS_DESTINATION_FILE, not both' },
      { variable: 'EGRESS_HTTP_PROXY_DESTINATION_FILE', line: 0, text: '/missing', message: "cannot read the file: ENOENT: no such file or directory, open '/missing'" },
      { variable: 'EGRESS_DNS_PROXY_DESTINATION_FILE', line: 0, text: '/denied', message: "cannot read the file: EACCES: permission denied, open '/denied'" }
    ]
  })
})

t.test('a non-Error thrown by readFile is still reported', async t => {
  // eslint-disable-next-line @typescript-eslint/only-throw-error
  const r = readRawSettings({ EGRESS_DESTINATION_FILE: '/x' }, {}, () => { throw 'boom' as unknown as Error })
  t.same(r, { issues: [{ variable: 'EGRESS_DESTINATION_FILE', line: 0, text: '/x', message: 'cannot read the file: boom' }] })
})
