/**
 * The README's first command: `bin/egress-router lab` in each mode proves with real traffic that the destination
 * sees EGRESS_SOURCE, and leaves nothing behind.
 */
import { execFile } from 'node:child_process'
import { existsSync } from 'node:fs'
import { fileURLToPath } from 'node:url'
import t from 'tap'
import { listNamespaces, removeNamespace } from '../../src/lab/topology.js'
import { privileged } from '../helpers/privileged.js'

const BIN = fileURLToPath(new URL('../../bin/egress-router', import.meta.url))
const DIST = fileURLToPath(new URL('../../dist/bundle/cli.js', import.meta.url))

async function lab (args: string[]): Promise<{ code: number | null, stdout: string, stderr: string, pid: number }> {
  return await new Promise((resolve) => {
    const child = execFile(process.execPath, [BIN, 'lab', ...args], { timeout: 90_000 }, (err, stdout, stderr) => {
      resolve({ code: err === null ? 0 : typeof err.code === 'number' ? err.code : null, stdout, stderr, pid: child.pid ?? -1 })
    })
  })
}

/**
 * The namespaces a lab process left (its names carry its pid), removed so that one failed run does not fail the
 * next ones too; another lab on this machine (`lab --keep`) is not touched.
 */
async function leftBy (pid: number): Promise<string[]> {
  const left = (await listNamespaces()).filter((n) => n.startsWith(`erlab-${pid}-`))
  for (const n of left) await removeNamespace(n)
  return left
}

const cases: Array<{ args: string[], source: string, lines: number }> = [
  { args: [], source: '192.0.2.99', lines: 2 },
  { args: ['--mode', 'http-proxy'], source: '192.0.2.99', lines: 2 },
  { args: ['--mode', 'dns-proxy'], source: '192.0.2.99', lines: 2 },
  { args: ['--ipv6'], source: '2001:db8:1::99', lines: 2 }
]

for (const c of cases) {
  t.test(`egress-router lab ${c.args.join(' ')}: the destination sees ${c.source}, then nothing is left`, privileged(), async (t) => {
    t.ok(existsSync(DIST), 'built (npm run build)')
    const r = await lab(c.args)
    t.equal(r.code, 0, `exit 0\n${r.stdout}\n${r.stderr}`)
    t.match(r.stdout, 'lab: PASS — the destination saw EGRESS_SOURCE')
    t.equal(r.stdout.split('\n').filter((l) => l.startsWith('ok   ') && !l.includes('from the LAN')).length, c.lines, 'every client request went through')
    t.equal(r.stdout.split('\n').filter((l) => l.includes(`a connection from ${c.source} = EGRESS_SOURCE`)).length, c.lines)
    t.match(r.stdout, /ok {3}from the LAN, \S+ is closed to new connections/)
    t.notMatch(r.stdout, 'FAIL')
    t.same(await leftBy(r.pid), [], 'no lab namespace left behind')
  })
}
