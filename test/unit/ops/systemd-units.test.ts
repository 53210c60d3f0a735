/**
 * The systemd units as systemd itself reads them: `systemd-analyze verify` must print nothing, and
 * `systemd-analyze security --offline=true` must not rate them above the exposure recorded in
 * docs/operations.md. Plus what the units promise (capabilities, timeouts, cleanup) and the example
 * environment file, which must name every variable and load as a valid host configuration.
 */
import t, { type Test } from 'tap'
import { spawnSync } from 'node:child_process'
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { dirname, join, resolve } from 'node:path'
import { fileURLToPath } from 'node:url'
import { loadConfig } from '../../../src/cli.js'
import { parseDuration } from '../../../src/config/duration.js'
import { VARIABLES } from '../../../src/config/env.js'
import { daemonEnv } from '../../../bench/scenarios.js'

const ROOT = resolve(dirname(fileURLToPath(import.meta.url)), '../../..')
const UNITS = ['egress-router.service', 'egress-router@.service'] as const
/** The exposure `systemd-analyze security --offline=true` gave (×10, as --threshold takes it): 1.8. */
const EXPOSURE_THRESHOLD = 18

function unitText (name: string): string {
  return readFileSync(join(ROOT, 'systemd', name), 'utf8')
}

/** `Key=value` per section; repeated keys keep every value in order. */
function parseUnit (text: string): Map<string, Map<string, string[]>> {
  const sections = new Map<string, Map<string, string[]>>()
  let current: Map<string, string[]> | undefined
  for (const raw of text.split('\n')) {
    const line = raw.trim()
    if (line === '' || line.startsWith('#') || line.startsWith(';')) continue
    const section = /^\[(.+)\]$/.exec(line)
    if (section !== null) {
      current = new Map()
      sections.set(section[1] as string, current)
      continue
    }
    const eq = line.indexOf('=')
    if (current === undefined || eq < 1) throw new Error(`not a unit line: ${line}`)
    const key = line.slice(0, eq)
    current.set(key, [...(current.get(key) ?? []), line.slice(eq + 1)])
  }
  return sections
}

function one (unit: Map<string, Map<string, string[]>>, section: string, key: string): string | undefined {
  const values = unit.get(section)?.get(key)
  return values === undefined ? undefined : values[values.length - 1]
}

function systemdAnalyzeSkip (): { skip: string | false } {
  const found = spawnSync('systemd-analyze', ['--version'], { stdio: 'ignore' }).status === 0
  if (found) return { skip: false }
  if (process.env.CI === 'true') throw new Error('systemd-analyze is needed under CI=true (Debian package systemd)')
  return { skip: 'needs systemd-analyze (Debian package systemd)' }
}

/**
 * A copy of the unit whose ExecStart/ExecStopPost point at this checkout and this node (verify checks that
 * the executables exist), under `name` in a fresh directory.
 */
function stage (t: Test, source: string, name: string, edit: (text: string) => string = (s) => s): string {
  const dir = mkdtempSync(join(tmpdir(), 'egress-units-'))
  t.teardown(() => { rmSync(dir, { recursive: true, force: true }) })
  const text = edit(unitText(source))
    .replaceAll('/usr/bin/node ', `${process.execPath} `)
    .replaceAll('/opt/egress-router/', `${ROOT}/`)
  const path = join(dir, name)
  writeFileSync(path, text)
  return path
}

function analyze (args: string[]): { status: number | null, out: string } {
  const r = spawnSync('systemd-analyze', args, { encoding: 'utf8', timeout: 60_000, env: { ...process.env, SYSTEMD_COLORS: '0', SYSTEMD_PAGER: '' } })
  return { status: r.status, out: `${r.stdout}${r.stderr}` }
}

function exposure (out: string): number {
  const m = /Overall exposure level for \S+: (\d+\.\d)/.exec(out)
  if (m === null) throw new Error(`no exposure level in: ${out.slice(-500)}`)
  return Number(m[1])
}

t.test('what the units promise', async t => {
  for (const name of UNITS) {
    t.test(name, async t => {
      const unit = parseUnit(unitText(name))
      t.equal(one(unit, 'Service', 'Type'), 'notify')
      t.equal(one(unit, 'Service', 'NotifyAccess'), 'all', 'systemd-notify sends READY=1 from a child process')
      t.equal(one(unit, 'Service', 'ExecStart'), '/usr/bin/node /opt/egress-router/bin/egress-router run')
      t.equal(one(unit, 'Service', 'ExecStopPost'), '/usr/bin/node /opt/egress-router/bin/egress-router cleanup')
      t.equal(one(unit, 'Service', 'ExecReload'), '/bin/kill -HUP $MAINPID')
      t.equal(one(unit, 'Service', 'KillSignal'), 'SIGTERM')
      t.equal(one(unit, 'Service', 'Restart'), 'on-failure')
      t.equal(one(unit, 'Service', 'RestartPreventExitStatus'), '2', 'an invalid configuration is not retried')
      const drain = VARIABLES.find((v) => v.name === 'EGRESS_DRAIN_TIMEOUT')?.default ?? ''
      const ms = (text: string): number => { const p = parseDuration(text); return p.ok ? p.value : NaN }
      const drainMs = ms(drain)
      const stopMs = ms(one(unit, 'Service', 'TimeoutStopSec') ?? '')
      t.ok(stopMs > drainMs, `TimeoutStopSec (${stopMs} ms) above the default drain (${drainMs} ms)`)
      const caps = ['CAP_NET_ADMIN', 'CAP_NET_BIND_SERVICE']
      t.same(one(unit, 'Service', 'CapabilityBoundingSet')?.split(/\s+/).sort(), caps)
      t.same(one(unit, 'Service', 'AmbientCapabilities')?.split(/\s+/).sort(), caps)
      t.equal(one(unit, 'Service', 'DynamicUser'), 'yes')
      t.equal(one(unit, 'Service', 'NoNewPrivileges'), 'yes')
      t.equal(one(unit, 'Service', 'ProtectSystem'), 'strict')
      t.equal(one(unit, 'Service', 'ProtectKernelTunables'), 'yes')
      t.equal(one(unit, 'Service', 'ReadWritePaths'), '/proc/sys/net', 'the only writable place: net sysctls')
      t.equal(one(unit, 'Service', 'ProcSubset'), undefined, 'ProcSubset=pid would hide /proc/sys')
      t.equal(one(unit, 'Service', 'MemoryDenyWriteExecute'), undefined, 'V8 JIT needs W+X pages')
      t.same(one(unit, 'Service', 'RestrictAddressFamilies')?.split(/\s+/).sort(), ['AF_INET', 'AF_INET6', 'AF_NETLINK', 'AF_UNIX'])
      t.equal(one(unit, 'Install', 'WantedBy'), 'multi-user.target')
      // the same allocator setting as the image, and as the bench measures the daemon
      t.equal(one(unit, 'Service', 'Environment'), `MALLOC_ARENA_MAX=${daemonEnv('http-proxy').MALLOC_ARENA_MAX as string}`)
      t.match(readFileSync(join(ROOT, 'Containerfile'), 'utf8'), /^ENV MALLOC_ARENA_MAX=2$/m)
    })
  }
})

t.test('the template is the plain unit, configured by instance', async t => {
  const plain = parseUnit(unitText('egress-router.service'))
  const template = parseUnit(unitText('egress-router@.service'))
  t.equal(one(plain, 'Service', 'EnvironmentFile'), '/etc/egress-router/egress-router.env')
  t.equal(one(template, 'Service', 'EnvironmentFile'), '/etc/egress-router/%i.env')
  t.equal(one(template, 'Unit', 'Conflicts'), 'egress-router.service', 'one router per host: same nft table')
  const differs = new Set(['Unit/Description', 'Unit/Conflicts', 'Service/EnvironmentFile'])
  t.same([...template.keys()], [...plain.keys()], 'same sections')
  for (const name of plain.keys()) {
    for (const key of new Set([...(plain.get(name)?.keys() ?? []), ...(template.get(name)?.keys() ?? [])])) {
      if (differs.has(`${name}/${key}`)) continue
      t.same(template.get(name)?.get(key), plain.get(name)?.get(key), `${name}/${key} is the same in both`)
    }
  }
})

t.test('systemd-analyze', systemdAnalyzeSkip(), async t => {
  const cases: Array<[string, string]> = [
    ['egress-router.service', 'egress-router.service'],
    ['egress-router@.service', 'egress-router@.service'],
    ['egress-router@.service', 'egress-router@example.service']
  ]
  for (const [source, name] of cases) {
    t.test(`verify ${name} prints nothing`, async t => {
      const path = stage(t, source, name)
      const r = analyze(['verify', path])
      t.equal(r.out, '', 'no warning at all')
      t.equal(r.status, 0)
    })
    t.test(`security ${name} stays at or below ${EXPOSURE_THRESHOLD / 10}`, async t => {
      const path = stage(t, source, name)
      const r = analyze(['security', '--offline=true', `--threshold=${EXPOSURE_THRESHOLD}`, path])
      t.equal(r.status, 0, r.status === 0 ? 'within threshold' : r.out.split('\n').filter((l) => l.includes('✗')).join('\n'))
      t.ok(exposure(r.out) <= EXPOSURE_THRESHOLD / 10, `exposure ${exposure(r.out)}`)
    })
  }

  t.test('the checks can fail: a warning, and a weaker sandbox', async t => {
    const bogus = stage(t, 'egress-router.service', 'egress-router.service', (s) => s.replace('[Service]\n', '[Service]\nNoSuchKey=1\n'))
    t.match(analyze(['verify', bogus]).out, /Unknown key/)
    const root = stage(t, 'egress-router.service', 'egress-router.service', (s) => s.replace(/^DynamicUser=yes\n/m, '').replace(/^ProtectSystem=strict\n/m, ''))
    const r = analyze(['security', '--offline=true', `--threshold=${EXPOSURE_THRESHOLD}`, root])
    t.not(r.status, 0, 'running as root without ProtectSystem exceeds the threshold')
    t.ok(exposure(r.out) > EXPOSURE_THRESHOLD / 10)
  })
})

t.test('example.env', async t => {
  const text = readFileSync(join(ROOT, 'systemd', 'example.env'), 'utf8')
  const active: Record<string, string> = {}
  const commented: Record<string, string> = {}
  const seen: string[] = []
  for (const line of text.split('\n')) {
    const m = /^(#?)(EGRESS_[A-Z0-9_]+)=(.*)$/.exec(line)
    if (m === null) continue
    const [, hash, name, value] = m as unknown as [string, string, string, string]
    seen.push(name)
    if (hash === '') active[name] = value; else commented[name] = value
  }
  const known = VARIABLES.map((v) => v.name)
  t.same([...new Set(seen)].sort(), [...known].sort(), 'every variable, and only those')
  t.same(seen.filter((n, i) => seen.indexOf(n) !== i), [], 'each one once')
  t.equal(active.EGRESS_ROUTING, 'host', 'a bare host keeps its default route')
  for (const v of VARIABLES) {
    if (v.default !== undefined && v.name in commented) t.equal(commented[v.name], v.default, `${v.name} shows its default`)
  }
  const acl = '*.example.com\n203.0.113.0/24\n'
  const files: Record<string, string> = { [active.EGRESS_HTTP_PROXY_DESTINATION_FILE ?? '']: acl }
  const loaded = loadConfig(active, {}, (path) => {
    const content = files[path]
    if (content === undefined) throw new Error(`ENOENT: ${path}`)
    return content
  })
  t.notOk('issues' in loaded, 'the active lines are a valid configuration')
  if ('config' in loaded) {
    t.equal(loaded.config.routing, 'host')
    t.equal(loaded.config.mode, 'http-proxy')
  }
})
