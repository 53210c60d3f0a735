import t from 'tap'
import { formatIssue } from '../../../src/errors.js'
import { parseConfig, resolveWorkers } from '../../../src/config/config.js'
import { kernelForwards, kernelNames, proxiedForwards } from '../../../src/config/dns-forwards.js'
import type { Config, RawSettings } from '../../../src/config/types.js'

const BASE = { EGRESS_SOURCE: '192.0.2.99', EGRESS_GATEWAY: '192.0.2.1', EGRESS_DESTINATION: '10.1.2.3' }

function config (raw: RawSettings): Config {
  const r = parseConfig(raw)
  if (!r.ok) throw new Error(`unexpected issues:\n${r.issues.map(formatIssue).join('\n')}`)
  return r.config
}
function errors (raw: RawSettings): string[] {
  const r = parseConfig(raw)
  if (r.ok) throw new Error(`expected issues for ${JSON.stringify(raw)}`)
  return r.issues.map(formatIssue)
}

t.test('the simplest config: defaults from SPEC.md', async t => {
  t.same(config(BASE), {
    modeName: 'legacy',
    mode: 'redirect',
    source: { address: '192.0.2.99', family: 4, prefix: 32, prefixGiven: false },
    gateway: { address: '192.0.2.1', family: 4 },
    interface: null,
    macvlan: { name: 'macvlan0', mode: 'bridge', mac: { kind: 'stable' } },
    podInterface: 'eth0',
    routing: 'pod',
    redirect: { rules: [], fallback: { kind: 'fallback', line: 1, target: { address: '10.1.2.3', family: 4 } } },
    httpProxy: null,
    dnsProxy: null,
    health: { host: '', port: 9090 },
    workers: 1,
    drainTimeoutMs: 25_000,
    dns: { minTtlMs: 2_000, maxTtlMs: 300_000, maxStaleMs: 86_400_000 },
    logLevel: 'info',
    sources: { destinationFile: null, httpProxyDestinationFile: null, dnsProxyDestinationFile: null }
  })
})

t.test('the config is deeply frozen', async t => {
  const c = config({ ...BASE, EGRESS_DESTINATION: '80 tcp 10.4.5.6\n10.1.2.3' })
  t.ok(Object.isFrozen(c))
  t.ok(Object.isFrozen(c.source))
  t.ok(Object.isFrozen(c.macvlan.mac))
  t.ok(Object.isFrozen(c.redirect?.rules))
  t.ok(Object.isFrozen(c.redirect?.rules[0]?.target))
  t.ok(Object.isFrozen(c.dns))
})

t.test('modes and the legacy alias; empty means the default', async t => {
  t.same([config({ ...BASE, EGRESS_ROUTER_MODE: '' }).modeName, config({ ...BASE, EGRESS_ROUTER_MODE: '' }).mode], ['legacy', 'redirect'])
  for (const [name, mode] of [['legacy', 'redirect'], ['redirect', 'redirect'], ['init', 'init'], ['unit-test', 'unit-test']] as const) {
    const c = config({ ...BASE, EGRESS_ROUTER_MODE: name })
    t.same([c.modeName, c.mode, c.redirect !== null, c.httpProxy, c.dnsProxy], [name, mode, true, null, null], name)
  }
  const h = config({ ...BASE, EGRESS_ROUTER_MODE: 'http-proxy', EGRESS_HTTP_PROXY_DESTINATION: '*' })
  t.same([h.mode, h.redirect, h.httpProxy?.acl.length, h.dnsProxy], ['http-proxy', null, 1, null])
  const d = config({ ...BASE, EGRESS_ROUTER_MODE: 'dns-proxy', EGRESS_DNS_PROXY_DESTINATION: '53 192.0.2.53' })
  t.same([d.mode, d.redirect, d.httpProxy, d.dnsProxy?.forwards.length], ['dns-proxy', null, null, 1])
  t.same(errors({ ...BASE, EGRESS_ROUTER_MODE: 'Legacy' }), [
    "EGRESS_ROUTER_MODE: 'Legacy': must be one of init, legacy, redirect, http-proxy, dns-proxy, unit-test"
  ])
})

t.test('required variables per mode', async t => {
  t.same(errors({}), [
    'EGRESS_SOURCE: is required: the reserved source address, e.g. 192.0.2.99 or 192.0.2.99/24',
    'EGRESS_GATEWAY: is required: the next hop on the macvlan network',
    'EGRESS_DESTINATION: is required in legacy mode (or set EGRESS_DESTINATION_FILE)'
  ])
  t.same(errors({ ...BASE, EGRESS_DESTINATION: '', EGRESS_ROUTER_MODE: 'unit-test' }), [
    'EGRESS_DESTINATION: is required in unit-test mode (or set EGRESS_DESTINATION_FILE)'
  ])
  t.same(errors({ ...BASE, EGRESS_ROUTER_MODE: 'http-proxy' }), [
    'EGRESS_HTTP_PROXY_DESTINATION: is required in http-proxy mode (or set EGRESS_HTTP_PROXY_DESTINATION_FILE)'
  ])
  t.same(errors({ ...BASE, EGRESS_ROUTER_MODE: 'dns-proxy' }), [
    'EGRESS_DNS_PROXY_DESTINATION: is required in dns-proxy mode (or set EGRESS_DNS_PROXY_DESTINATION_FILE)'
  ])
  // another mode's destination is not read (a shared ConfigMap may carry all three)
  t.ok(parseConfig({ ...BASE, EGRESS_HTTP_PROXY_DESTINATION: 'foo bar', EGRESS_DNS_PROXY_DESTINATION: 'x' }).ok)
})

t.test('EGRESS_SOURCE: address, prefix, family', async t => {
  t.same(config({ ...BASE, EGRESS_SOURCE: '192.0.2.99/24' }).source, { address: '192.0.2.99', family: 4, prefix: 24, prefixGiven: true })
  t.same(config({ ...BASE, EGRESS_SOURCE: '192.0.2.99/32' }).source, { address: '192.0.2.99', family: 4, prefix: 32, prefixGiven: true })
  const v6 = config({ EGRESS_SOURCE: '2001:DB8::99/64', EGRESS_GATEWAY: '2001:db8::1', EGRESS_DESTINATION: '80 tcp 2001:db8:1::80' })
  t.same([v6.source, v6.gateway], [{ address: '2001:db8::99', family: 6, prefix: 64, prefixGiven: true }, { address: '2001:db8::1', family: 6 }])
  const cases: Array<[string, string]> = [
    ['not an IP address', "EGRESS_SOURCE: 'not an IP address': not an IP address is not a valid IPv4 or IPv6 address"],
    ['192.0.2.99/33', "EGRESS_SOURCE: '192.0.2.99/33': prefix length must be a number from 0 to 32"],
    ['192.0.2.99/0', "EGRESS_SOURCE: '192.0.2.99/0': a /0 prefix would put every address on the macvlan network"],
    ['0.0.0.0', "EGRESS_SOURCE: '0.0.0.0': 0.0.0.0 cannot be a source address"],
    ['239.1.1.1', "EGRESS_SOURCE: '239.1.1.1': 239.1.1.1 cannot be a source address"],
    ['999.1.1.1', "EGRESS_SOURCE: '999.1.1.1': 999.1.1.1 is not a valid IPv4 or IPv6 address"]
  ]
  // the gateway check is skipped when the source is unusable: one problem, one line
  for (const [source, line] of cases) t.same(errors({ ...BASE, EGRESS_SOURCE: source }), [line], source)
})

t.test('EGRESS_GATEWAY: a single address of the source family, not the source', async t => {
  const cases: Array<[string, string]> = [
    ['not an IP address', "EGRESS_GATEWAY: 'not an IP address': not an IP address is not a valid IPv4 or IPv6 address"],
    ['192.0.2.1/24', "EGRESS_GATEWAY: '192.0.2.1/24': must be a single address, without a prefix"],
    ['2001:db8::1', "EGRESS_GATEWAY: '2001:db8::1': is IPv6, but EGRESS_SOURCE is IPv4"],
    ['192.0.2.99', "EGRESS_GATEWAY: '192.0.2.99': must not be EGRESS_SOURCE itself"],
    ['0.0.0.0', "EGRESS_GATEWAY: '0.0.0.0': 0.0.0.0 cannot be a gateway"]
  ]
  for (const [gw, line] of cases) t.same(errors({ ...BASE, EGRESS_GATEWAY: gw }), [line], gw)
})

t.test('redirect targets of the other family are an issue on their line', async t => {
  t.same(errors({ ...BASE, EGRESS_DESTINATION: '80 tcp 10.4.5.6\n443 tcp 2001:db8::443\n2001:db8::1' }), [
    "EGRESS_DESTINATION line 2: '443 tcp 2001:db8::443': 2001:db8::443 is IPv6, but EGRESS_SOURCE is IPv4",
    "EGRESS_DESTINATION line 3: '2001:db8::1': 2001:db8::1 is IPv6, but EGRESS_SOURCE is IPv4"
  ])
  t.same(errors({ ...BASE, EGRESS_ROUTER_MODE: 'dns-proxy', EGRESS_DNS_PROXY_DESTINATION: '53 2001:db8::53' }), [
    "EGRESS_DNS_PROXY_DESTINATION line 1: '53 2001:db8::53': 2001:db8::53 is IPv6, but EGRESS_SOURCE is IPv4"
  ])
})

t.test('EGRESS_HEALTH_ADDRESS forms', async t => {
  const cases: Array<[string, { host: string, port: number } | null]> = [
    [':9090', { host: '', port: 9090 }],
    ['127.0.0.1:8081', { host: '127.0.0.1', port: 8081 }],
    ['[::1]:9090', { host: '::1', port: 9090 }],
    ['[2001:DB8::1]:9090', { host: '2001:db8::1', port: 9090 }],
    ['localhost:9090', { host: 'localhost', port: 9090 }],
    ['', null],
    ['  ', null]
  ]
  for (const [text, health] of cases) t.same(config({ ...BASE, EGRESS_HEALTH_ADDRESS: text }).health, health, JSON.stringify(text))
  const bad: Array<[string, string]> = [
    ['9090', 'must be host:port, :port or [ipv6]:port (empty turns the listener off)'],
    ['::1:9090', 'an IPv6 address must be in brackets: [::1]:9090'],
    ['[192.0.2.1]:9090', 'brackets are only for an IPv6 address: [2001:db8::1]:9090'],
    [':0', 'port must be a number from 1 to 65535'],
    ['127.0.0.1:', 'port must be a number from 1 to 65535'],
    [':http', 'port must be a number from 1 to 65535'],
    ['bad_host:80', 'bad_host is not a valid IP address or host name'],
    ['999.1.1.1:80', '999.1.1.1 is not a valid IPv4 address']
  ]
  for (const [text, message] of bad) t.same(errors({ ...BASE, EGRESS_HEALTH_ADDRESS: text }), [`EGRESS_HEALTH_ADDRESS: '${text}': ${message}`], text)
})

t.test('EGRESS_WORKERS: 1 by default, a number or auto in the proxy modes, resolved against the CPUs', async t => {
  const dns = { ...BASE, EGRESS_ROUTER_MODE: 'dns-proxy', EGRESS_DNS_PROXY_DESTINATION: '53 192.0.2.53' }
  const http = { ...BASE, EGRESS_ROUTER_MODE: 'http-proxy', EGRESS_HTTP_PROXY_DESTINATION: '*' }
  t.equal(config(dns).workers, 1)
  t.equal(config({ ...dns, EGRESS_WORKERS: '' }).workers, 1, 'empty is the default')
  t.equal(config({ ...dns, EGRESS_WORKERS: '4' }).workers, 4)
  t.equal(config({ ...http, EGRESS_WORKERS: '64' }).workers, 64)
  t.equal(config({ ...http, EGRESS_WORKERS: 'auto' }).workers, 'auto')
  for (const text of ['0', '65', '-1', '2.5', 'two', '1e1', ' 2', '0x2', '1000']) {
    t.same(errors({ ...dns, EGRESS_WORKERS: text }), [`EGRESS_WORKERS: '${text}': must be auto or a whole number from 1 to 64`], text)
  }
  // redirect relays in the kernel: more than one worker there is a mistake, not a tuning
  t.same(errors({ ...BASE, EGRESS_WORKERS: '2' }), ["EGRESS_WORKERS: '2': applies to the http-proxy and dns-proxy modes; legacy mode relays in the kernel and runs no workers"])
  t.same(errors({ ...BASE, EGRESS_ROUTER_MODE: 'init', EGRESS_WORKERS: '3' }), ["EGRESS_WORKERS: '3': applies to the http-proxy and dns-proxy modes; init mode relays in the kernel and runs no workers"])
  t.equal(config({ ...BASE, EGRESS_WORKERS: '1' }).workers, 1)
  t.equal(config({ ...BASE, EGRESS_WORKERS: 'auto' }).workers, 'auto')

  t.equal(resolveWorkers(config({ ...dns, EGRESS_WORKERS: 'auto' }), 8), 8)
  t.equal(resolveWorkers(config({ ...dns, EGRESS_WORKERS: 'auto' }), 0), 1, 'no CPU count known: one')
  t.equal(resolveWorkers(config({ ...dns, EGRESS_WORKERS: 'auto' }), 200), 64, 'capped at 64')
  t.equal(resolveWorkers(config({ ...http, EGRESS_WORKERS: '3' }), 1), 3, 'a number is taken as given')
  t.equal(resolveWorkers(config({ ...BASE, EGRESS_WORKERS: 'auto' }), 8), 1, 'redirect mode: none')
})

t.test('EGRESS_DNS_PROXY_FORWARDING: proxy by default, kernel in dns-proxy mode only; the split of the forwards', async t => {
  const dns = { ...BASE, EGRESS_ROUTER_MODE: 'dns-proxy', EGRESS_DNS_PROXY_DESTINATION: '53 192.0.2.53\n8443 db.example.com 443\n8080 203.0.113.11 80' }
  t.equal(config(dns).dnsProxy?.forwarding, 'proxy')
  t.equal(config({ ...dns, EGRESS_DNS_PROXY_FORWARDING: '' }).dnsProxy?.forwarding, 'proxy', 'empty is the default')
  t.equal(config({ ...dns, EGRESS_DNS_PROXY_FORWARDING: 'kernel' }).dnsProxy?.forwarding, 'kernel')
  for (const text of ['Kernel', 'dnat', 'on', ' kernel']) {
    t.same(errors({ ...dns, EGRESS_DNS_PROXY_FORWARDING: text }), [`EGRESS_DNS_PROXY_FORWARDING: '${text}': must be one of proxy, kernel`], text)
  }
  t.same(errors({ ...BASE, EGRESS_DNS_PROXY_FORWARDING: 'kernel' }), ["EGRESS_DNS_PROXY_FORWARDING: 'kernel': applies to dns-proxy mode only; legacy mode has no dns-proxy forwards"])
  t.same(errors({ ...BASE, EGRESS_ROUTER_MODE: 'http-proxy', EGRESS_HTTP_PROXY_DESTINATION: '*', EGRESS_DNS_PROXY_FORWARDING: 'kernel' }),
    ["EGRESS_DNS_PROXY_FORWARDING: 'kernel': applies to dns-proxy mode only; http-proxy mode has no dns-proxy forwards"])
  t.equal(config({ ...BASE, EGRESS_DNS_PROXY_FORWARDING: 'proxy' }).dnsProxy, null, 'proxy is harmless in the other modes')

  const proxy = config(dns).dnsProxy
  t.same(proxiedForwards(proxy).map(f => f.line), [1, 2, 3], 'proxy: the process relays every forward')
  t.same(kernelForwards(proxy), [], 'and the kernel none')
  t.same(kernelNames(proxy), [], 'so no name is followed for the kernel')
  const kernel = config({ ...dns, EGRESS_DNS_PROXY_FORWARDING: 'kernel' }).dnsProxy
  t.same(proxiedForwards(kernel), [], 'kernel: the process relays none')
  t.same(kernelForwards(kernel).map(f => f.line), [1, 2, 3], 'and the kernel every one, host names included')
  t.same(kernelNames(kernel), ['db.example.com'], 'whose names the daemon follows')
  const names = config({ ...dns, EGRESS_DNS_PROXY_DESTINATION: '1 b.example.com\n2 A.example.com\n3 b.example.com 4\n4 192.0.2.1', EGRESS_DNS_PROXY_FORWARDING: 'kernel' }).dnsProxy
  t.same(kernelNames(names), ['b.example.com', 'a.example.com'], 'each name once, lower case, in line order')
  t.same(proxiedForwards(null), [])
  t.same(kernelForwards(null), [])
  t.same(kernelNames(null), [])

  // with every forward in the kernel no process relays: workers would have nothing to do
  t.same(errors({ ...dns, EGRESS_DNS_PROXY_FORWARDING: 'kernel', EGRESS_WORKERS: '2' }),
    ["EGRESS_WORKERS: '2': with EGRESS_DNS_PROXY_FORWARDING=kernel every forward relays in the kernel and no workers run"])
  t.equal(resolveWorkers(config({ ...dns, EGRESS_DNS_PROXY_FORWARDING: 'kernel', EGRESS_WORKERS: 'auto' }), 8), 1, 'auto: one')
  t.equal(resolveWorkers(config({ ...dns, EGRESS_DNS_PROXY_FORWARDING: 'kernel', EGRESS_WORKERS: '1' }), 8), 1)
})

t.test('http-proxy settings: port, CONNECT ports, access log, clients', async t => {
  const http = { ...BASE, EGRESS_ROUTER_MODE: 'http-proxy', EGRESS_HTTP_PROXY_DESTINATION: '*.example.com' }
  t.same(config(http).httpProxy, {
    port: 8080,
    connectPorts: '*',
    clients: null,
    accessLog: true,
    acl: [{ line: 1, text: '*.example.com', action: 'allow', match: { kind: 'domain', domain: 'example.com' } }]
  })
  const c = config({ ...http, EGRESS_HTTP_PROXY_PORT: '3128', EGRESS_HTTP_PROXY_CONNECT_PORTS: ' 443, 8443 ,443', EGRESS_HTTP_PROXY_CLIENTS: '10.1.2.3/8, 2001:db8::/32 192.0.2.0/24' })
  t.same([c.httpProxy?.port, c.httpProxy?.connectPorts, c.httpProxy?.clients], [3128, [443, 8443], [
    { address: '10.0.0.0', family: 4, prefix: 8 }, { address: '2001:db8::', family: 6, prefix: 32 }, { address: '192.0.2.0', family: 4, prefix: 24 }
  ]])
  t.equal(config({ ...http, EGRESS_HTTP_PROXY_CONNECT_PORTS: '*' }).httpProxy?.connectPorts, '*')
  t.equal(config({ ...http, EGRESS_HTTP_PROXY_ACCESS_LOG: 'off' }).httpProxy?.accessLog, false)
  t.equal(config({ ...http, EGRESS_HTTP_PROXY_ACCESS_LOG: 'on' }).httpProxy?.accessLog, true)
  t.same(errors({ ...http, EGRESS_HTTP_PROXY_ACCESS_LOG: 'yes' }), ["EGRESS_HTTP_PROXY_ACCESS_LOG: 'yes': must be one of on, off"])
  t.same(errors({ ...http, EGRESS_HTTP_PROXY_PORT: '0', EGRESS_HTTP_PROXY_CONNECT_PORTS: '443,*,x', EGRESS_HTTP_PROXY_CLIENTS: '10.0.0.0/8,10.0.0.0/40' }), [
    "EGRESS_HTTP_PROXY_PORT: '0': port must be a number from 1 to 65535",
    "EGRESS_HTTP_PROXY_CONNECT_PORTS: '443,*,x': '*' must stand alone (any port)",
    "EGRESS_HTTP_PROXY_CONNECT_PORTS: '443,*,x': 'x': port must be a number from 1 to 65535",
    "EGRESS_HTTP_PROXY_CLIENTS: '10.0.0.0/8,10.0.0.0/40': prefix length must be a number from 0 to 32"
  ])
  t.same(errors({ ...http, EGRESS_HTTP_PROXY_PORT: '9090' }), ["EGRESS_HTTP_PROXY_PORT: '9090': is also the port of EGRESS_HEALTH_ADDRESS"])
  t.ok(parseConfig({ ...http, EGRESS_HTTP_PROXY_PORT: '9090', EGRESS_HEALTH_ADDRESS: '' }).ok, 'no clash when health is off')
})

t.test('a dns-proxy forward on the health port is an issue on its line', async t => {
  t.same(errors({ ...BASE, EGRESS_ROUTER_MODE: 'dns-proxy', EGRESS_HEALTH_ADDRESS: ':8053', EGRESS_DNS_PROXY_DESTINATION: '# x\n 8053 dns.example.com 53 ' }), [
    "EGRESS_DNS_PROXY_DESTINATION line 2: '8053 dns.example.com 53': port 8053 is also the port of EGRESS_HEALTH_ADDRESS"
  ])
})

t.test('durations and the TTL clamp', async t => {
  const c = config({ ...BASE, EGRESS_DRAIN_TIMEOUT: '1m30s', EGRESS_DNS_MIN_TTL: '0', EGRESS_DNS_MAX_TTL: '1h', EGRESS_DNS_MAX_STALE: '0s' })
  t.same([c.drainTimeoutMs, c.dns], [90_000, { minTtlMs: 0, maxTtlMs: 3_600_000, maxStaleMs: 0 }])
  t.same(errors({ ...BASE, EGRESS_DRAIN_TIMEOUT: '-1s', EGRESS_DNS_MIN_TTL: '10m' }), [
    "EGRESS_DRAIN_TIMEOUT: '-1s': must be a duration like 300ms, 25s, 1m30s or 24h (a bare number is seconds)",
    "EGRESS_DNS_MIN_TTL: '10m': must not be longer than EGRESS_DNS_MAX_TTL (300s)"
  ])
})

t.test('log level and the debug switches of the old images', async t => {
  t.equal(config({ ...BASE, EGRESS_ROUTER_DEBUG: '1' }).logLevel, 'debug')
  t.equal(config({ ...BASE, EGRESS_DNS_PROXY_DEBUG: 'yes' }).logLevel, 'debug')
  t.equal(config({ ...BASE, EGRESS_ROUTER_DEBUG: 'false' }).logLevel, 'info')
  t.equal(config({ ...BASE, EGRESS_ROUTER_DEBUG: '0' }).logLevel, 'info')
  t.equal(config({ ...BASE, EGRESS_ROUTER_DEBUG: '' }).logLevel, 'info')
  t.equal(config({ ...BASE, EGRESS_ROUTER_DEBUG: '1', EGRESS_LOG_LEVEL: 'trace' }).logLevel, 'trace', 'debug never makes it quieter')
  t.equal(config({ ...BASE, EGRESS_ROUTER_DEBUG: '1', EGRESS_LOG_LEVEL: 'warn' }).logLevel, 'debug')
  t.equal(config({ ...BASE, EGRESS_LOG_LEVEL: 'silent' }).logLevel, 'silent')
  t.same(errors({ ...BASE, EGRESS_LOG_LEVEL: 'verbose' }), ["EGRESS_LOG_LEVEL: 'verbose': must be one of trace, debug, info, warn, error, fatal, silent"])
})

t.test('links, macvlan mode, MAC, routing', async t => {
  const c = config({ ...BASE, EGRESS_INTERFACE: 'ens3', EGRESS_MACVLAN_NAME: 'egress0', EGRESS_MACVLAN_MODE: 'private', EGRESS_MACVLAN_MAC: '02:00:5E:10:00:01', EGRESS_POD_INTERFACE: 'net1', EGRESS_ROUTING: 'host' })
  t.same([c.interface, c.macvlan, c.podInterface, c.routing], ['ens3', { name: 'egress0', mode: 'private', mac: { kind: 'fixed', mac: '02:00:5e:10:00:01' } }, 'net1', 'host'])
  t.same(config({ ...BASE, EGRESS_MACVLAN_MAC: 'random' }).macvlan.mac, { kind: 'random' })
  t.same(errors({
    ...BASE,
    EGRESS_INTERFACE: 'a-very-long-interface-name',
    EGRESS_MACVLAN_NAME: 'eth0',
    EGRESS_MACVLAN_MODE: 'source',
    EGRESS_MACVLAN_MAC: '01:00:5e:00:00:01',
    EGRESS_ROUTING: 'nat'
  }), [
    "EGRESS_INTERFACE: 'a-very-long-interface-name': must be a network interface name: at most 15 characters, no /, : or whitespace",
    "EGRESS_MACVLAN_MODE: 'source': must be one of bridge, private, vepa, passthru",
    "EGRESS_MACVLAN_MAC: '01:00:5e:00:00:01': 01:00:5e:00:00:01 is a multicast MAC address; a link needs a unicast one; or use random or stable",
    "EGRESS_POD_INTERFACE: 'eth0': must differ from EGRESS_MACVLAN_NAME (clients come in on one, traffic leaves on the other)",
    "EGRESS_ROUTING: 'nat': must be one of pod, host"
  ])
  t.same(errors({ ...BASE, EGRESS_INTERFACE: 'macvlan0' }), ["EGRESS_INTERFACE: 'macvlan0': must differ from EGRESS_MACVLAN_NAME (the macvlan is made on top of it)"])
  for (const bad of ['eth0:1', 'a/b', 'a b', '.', '..']) {
    t.same(errors({ ...BASE, EGRESS_POD_INTERFACE: bad }), [`EGRESS_POD_INTERFACE: '${bad}': must be a network interface name: at most 15 characters, no /, : or whitespace`])
  }
})

t.test('sources record the _FILE paths for SIGHUP', async t => {
  const c = config({ ...BASE, EGRESS_DESTINATION_FILE: '/etc/egress/dest', EGRESS_DNS_PROXY_DESTINATION_FILE: '/etc/egress/dns' })
  t.same(c.sources, { destinationFile: '/etc/egress/dest', httpProxyDestinationFile: null, dnsProxyDestinationFile: '/etc/egress/dns' })
})

t.test('every problem of every variable and every line at once, in SPEC table order', async t => {
  t.same(errors({
    EGRESS_LOG_LEVEL: 'loud',
    EGRESS_DESTINATION: '80 sctp 10.4.5.6\n10.1.2.3\n443 tcp 10.4.5.6',
    EGRESS_SOURCE: '192.0.2.99/24',
    EGRESS_GATEWAY: '2001:db8::1',
    EGRESS_DRAIN_TIMEOUT: 'soon'
  }), [
    "EGRESS_GATEWAY: '2001:db8::1': is IPv6, but EGRESS_SOURCE is IPv4",
    "EGRESS_DESTINATION line 1: '80 sctp 10.4.5.6': protocol must be tcp or udp",
    "EGRESS_DESTINATION line 3: '443 tcp 10.4.5.6': the fallback '10.1.2.3' on line 2 must be the last rule",
    "EGRESS_DRAIN_TIMEOUT: 'soon': must be a duration like 300ms, 25s, 1m30s or 24h (a bare number is seconds)",
    "EGRESS_LOG_LEVEL: 'loud': must be one of trace, debug, info, warn, error, fatal, silent"
  ])
})
