/**
 * The Containerfile, checked without a container engine: its stages, that every COPY source exists in
 * the repository and is not ignored by .containerignore, that the ENTRYPOINT script and what it imports
 * trace back through the COPY chain and the TypeScript build to files of this checkout, and that the
 * HEALTHCHECK script is valid JavaScript that really answers healthy / unhealthy against a live server.
 */
import t, { type Test } from 'tap'
import { spawn, spawnSync } from 'node:child_process'
import { existsSync, readFileSync } from 'node:fs'
import { createServer, type Server } from 'node:http'
import type { AddressInfo } from 'node:net'
import { networkInterfaces } from 'node:os'
import { dirname, join, posix, resolve } from 'node:path'
import { fileURLToPath } from 'node:url'
import { ENTRIES, OUT_DIR } from '../../../scripts/bundle.mjs'

const ROOT = resolve(dirname(fileURLToPath(import.meta.url)), '../../..')

interface Instruction { readonly op: string, readonly args: string }
interface Stage { readonly name: string | null, readonly image: string, readonly body: Instruction[] }

/** Instructions with `\` continuations joined and comments dropped (Dockerfile syntax). */
function instructions (text: string): Instruction[] {
  const out: Instruction[] = []
  let pending = ''
  for (const raw of text.split('\n')) {
    if (pending === '' && /^\s*#/.test(raw)) continue
    if (pending !== '' && /^\s*#/.test(raw)) continue
    const line = raw.replace(/\s+$/, '')
    if (line.endsWith('\\')) { pending += line.slice(0, -1) + ' '; continue }
    const full = (pending + line).trim()
    pending = ''
    if (full === '') continue
    const m = /^(\S+)\s+(.*)$/s.exec(full)
    if (m === null) throw new Error(`not an instruction: ${full}`)
    out.push({ op: (m[1] as string).toUpperCase(), args: (m[2] as string).trim() })
  }
  return out
}

function stages (list: Instruction[]): Stage[] {
  const out: Array<{ name: string | null, image: string, body: Instruction[] }> = []
  for (const ins of list) {
    if (ins.op === 'FROM') {
      const m = /^(\S+)(?:\s+AS\s+(\S+))?$/i.exec(ins.args)
      if (m === null) throw new Error(`bad FROM: ${ins.args}`)
      out.push({ image: m[1] as string, name: m[2] ?? null, body: [] })
    } else {
      const current = out[out.length - 1]
      if (current === undefined) throw new Error(`${ins.op} before FROM`)
      current.body.push(ins)
    }
  }
  return out
}

interface Copy { readonly from: string | null, readonly sources: string[], readonly dest: string, readonly intoDir: boolean }

/** COPY [--from=X] src… dest, resolved against the WORKDIR in force at that point. */
function copies (stage: Stage): Array<Copy & { readonly workdir: string }> {
  let workdir = '/'
  const out: Array<Copy & { workdir: string }> = []
  for (const ins of stage.body) {
    if (ins.op === 'WORKDIR') workdir = posix.resolve(workdir, ins.args)
    if (ins.op !== 'COPY') continue
    const words = ins.args.split(/\s+/)
    let from: string | null = null
    while (words[0]?.startsWith('--') === true) {
      const flag = words.shift() as string
      const m = /^--from=(.+)$/.exec(flag)
      if (m !== null) from = m[1] as string
    }
    const dest = words.pop() as string
    // `dest/` (or several sources) copies into the directory; a single `dest` names the copy itself
    out.push({ from, sources: words, dest: posix.resolve(workdir, dest), intoDir: dest.endsWith('/') || words.length > 1, workdir })
  }
  return out
}

function json<T> (text: string): T { return JSON.parse(text) as T }

const text = readFileSync(join(ROOT, 'Containerfile'), 'utf8')
const all = stages(instructions(text))
const build = all.find((s) => s.name === 'build')
const runtime = all[all.length - 1] as Stage
const tsconfig = json<{ compilerOptions: { outDir: string, rootDir: string } }>(readFileSync(join(ROOT, 'tsconfig.json'), 'utf8'))

/**
 * Where a path of the image comes from: a repository file (`repo:<path>`), or a file the TypeScript build
 * emits (traced to its source). Walks the COPY chain backwards through the stages.
 */
function origin (stage: Stage, path: string, depth = 0): string {
  if (depth > 8) throw new Error(`COPY chain too deep at ${path}`)
  const list = copies(stage)
  for (let i = list.length - 1; i >= 0; i--) {
    const c = list[i] as Copy & { workdir: string }
    for (const src of c.sources) {
      const base = c.intoDir ? posix.join(c.dest, posix.basename(src)) : c.dest
      if (path !== base && !path.startsWith(`${base}/`)) continue
      const rest = path.slice(base.length)
      if (c.from === null) return `repo:${posix.normalize(src + rest)}`
      const other = all.find((s) => s.name === c.from)
      if (other === undefined) throw new Error(`COPY --from=${c.from}: no such stage`)
      return origin(other, posix.resolve('/', src) + rest, depth + 1)
    }
  }
  // not copied: emitted by `npm run build` (tsc, then scripts/bundle.mjs) in this stage?
  const runs = stage.body.filter((i) => i.op === 'RUN').map((i) => i.args).join('\n')
  const workdir = copies(stage).at(-1)?.workdir ?? '/'
  const outDir = posix.resolve(workdir, tsconfig.compilerOptions.outDir)
  const bundleDir = posix.resolve(workdir, OUT_DIR)
  if (/npm run build/.test(runs) && posix.dirname(path) === bundleDir) {
    const entry = ENTRIES.find((e) => posix.basename(e) === posix.basename(path))
    if (entry === undefined) throw new Error(`${path}: not an entry of the bundle (${ENTRIES.join(', ')})`)
    // the bundler must be in the stage to run
    origin(stage, posix.resolve(workdir, 'scripts/bundle.mjs'), depth + 1)
    return origin(stage, posix.resolve(outDir, entry), depth + 1)
  }
  if (/npm run build/.test(runs) && path.startsWith(`${outDir}/`) && path.endsWith('.js')) {
    const source = posix.resolve(workdir, tsconfig.compilerOptions.rootDir, path.slice(outDir.length + 1).replace(/\.js$/, '.ts'))
    return origin(stage, source, depth + 1)
  }
  throw new Error(`${path} is neither copied nor built in stage ${stage.name ?? stage.image}`)
}

function ignorePatterns (): RegExp[] {
  const lines = readFileSync(join(ROOT, '.containerignore'), 'utf8').split('\n').map((l) => l.trim())
  return lines.filter((l) => l !== '' && !l.startsWith('#')).map((p) => {
    const re = p.replace(/\/$/, '').split('*').map((s) => s.replace(/[.+?^${}()|[\]\\]/g, '\\$&')).join('[^/]*')
    return new RegExp(`^${re}(/|$)`)
  })
}

t.test('two stages from node:20-bookworm-slim: build, then runtime', async t => {
  t.equal(all.length, 2)
  t.ok(build !== undefined, 'a stage named build')
  t.equal(build?.image, 'docker.io/library/node:20-bookworm-slim')
  t.equal(runtime.image, 'docker.io/library/node:20-bookworm-slim')
  const runs = (build?.body ?? []).filter((i) => i.op === 'RUN').map((i) => i.args).join('\n')
  t.match(runs, /npm ci\b/)
  t.match(runs, /npm run build/)
  t.match(runs, /npm prune --omit=dev/)
  const runtimeRuns = runtime.body.filter((i) => i.op === 'RUN').map((i) => i.args).join('\n')
  t.match(runtimeRuns, /apt-get install -y --no-install-recommends [^&]*\bnftables\b/)
  t.notMatch(runtimeRuns, /\bcurl\b|\bwget\b/, 'no HTTP client in the image')
})

t.test('every COPY source of the build context exists and is not ignored', async t => {
  const ignored = ignorePatterns()
  const sources = all.flatMap((s) => copies(s)).filter((c) => c.from === null).flatMap((c) => c.sources)
  t.ok(sources.length >= 4)
  for (const src of sources) {
    t.ok(existsSync(join(ROOT, src)), `${src} exists`)
    t.notOk(ignored.some((re) => re.test(posix.normalize(src))), `${src} is not in .containerignore`)
  }
  t.ok(ignored.some((re) => re.test('node_modules')), 'the host node_modules stays out of the context')
  t.ok(ignored.some((re) => re.test('dist')), 'so does a host build')
})

t.test('the entrypoint runs bin/egress-router, which finds the bundled cli', async t => {
  const entry = runtime.body.filter((i) => i.op === 'ENTRYPOINT').at(-1)
  const argv = json<string[]>(entry?.args ?? 'null')
  t.same(argv, ['/usr/local/bin/node', '/app/bin/egress-router'], 'exec form, node of the base image')
  const cmd = runtime.body.filter((i) => i.op === 'CMD').at(-1)
  t.same(json<string[]>(cmd?.args ?? 'null'), ['run'])
  t.equal(origin(runtime, argv[1] as string), 'repo:bin/egress-router')
  const script = readFileSync(join(ROOT, 'bin/egress-router'), 'utf8')
  const imported = /import\(['"]([^'"]+)['"]\)/.exec(script)?.[1]
  t.ok(imported !== undefined, 'bin/egress-router imports the cli')
  const target = posix.resolve(posix.dirname(argv[1] as string), imported as string)
  t.equal(target, '/app/dist/bundle/cli.js')
  const source = origin(runtime, target)
  t.equal(source, 'repo:src/cli.ts', 'built from src/cli.ts')
  t.ok(existsSync(join(ROOT, source.slice('repo:'.length))))
  t.throws(() => origin(runtime, '/app/test/unit/sanity.test.ts'), /neither copied nor built/, 'the tests are not in the image')
  const link = runtime.body.filter((i) => i.op === 'RUN').map((i) => /ln -s (\S+) \/usr\/local\/bin\/egress-router/.exec(i.args)?.[1]).find((x) => x !== undefined)
  t.equal(link, argv[1], '`egress-router` on PATH is the same script')
})

// ---- HEALTHCHECK ---------------------------------------------------------------------------------------

const health = runtime.body.filter((i) => i.op === 'HEALTHCHECK').at(-1)
const healthArgv = json<string[]>((health?.args ?? '').replace(/^(--\S+\s+)*CMD\s+/, ''))

function runHealthcheck (env: Record<string, string>): Promise<{ code: number | null, stderr: string }> {
  const [node, ...args] = healthArgv
  t.equal(node, '/usr/local/bin/node')
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, args, { env: { PATH: process.env.PATH ?? '', ...env }, stdio: ['ignore', 'ignore', 'pipe'] })
    const timer = setTimeout(() => { child.kill('SIGKILL') }, 20_000)
    let stderr = ''
    child.stderr.setEncoding('utf8').on('data', (d: string) => { stderr += d })
    child.once('error', reject)
    child.once('close', (code) => { clearTimeout(timer); resolve({ code, stderr }) })
  })
}

async function listen (t: Test, host: string, status: number, paths: string[]): Promise<number> {
  const server: Server = createServer((req, res) => { paths.push(req.url ?? ''); res.writeHead(status).end() })
  await new Promise<void>((resolve, reject) => { server.once('error', reject).listen(0, host, resolve) })
  t.teardown(() => new Promise<void>((resolve) => { server.close(() => resolve()) }))
  return (server.address() as AddressInfo).port
}

t.test('HEALTHCHECK', async t => {
  t.match(health?.args ?? '', /^--interval=\S+ --timeout=\S+ --start-period=\S+ --retries=\d+\s+CMD \[/)
  t.equal(healthArgv[1], '-e')
  const script = healthArgv[2] ?? ''
  const check = spawnSync(process.execPath, ['--check'], { input: script, encoding: 'utf8' })
  t.equal(check.status, 0, `node --check: ${check.stderr}`)

  t.test('200 on /healthz is healthy, whatever the host form', async t => {
    const paths: string[] = []
    const port = await listen(t, '127.0.0.1', 200, paths)
    t.equal((await runHealthcheck({ EGRESS_HEALTH_ADDRESS: `:${port}` })).code, 0, ':port → 127.0.0.1')
    t.equal((await runHealthcheck({ EGRESS_HEALTH_ADDRESS: `0.0.0.0:${port}` })).code, 0, '0.0.0.0 → 127.0.0.1')
    t.equal((await runHealthcheck({ EGRESS_HEALTH_ADDRESS: `127.0.0.1:${port}` })).code, 0)
    t.same(paths, ['/healthz', '/healthz', '/healthz'])
  })

  const hasV6Loopback = Object.values(networkInterfaces()).flat().some((a) => a?.address === '::1')
  t.test('IPv6 loopback', { skip: hasV6Loopback ? false : 'no ::1 on this machine' }, async t => {
    const paths: string[] = []
    const port = await listen(t, '::1', 200, paths)
    t.equal((await runHealthcheck({ EGRESS_HEALTH_ADDRESS: `[::1]:${port}` })).code, 0)
    t.equal((await runHealthcheck({ EGRESS_HEALTH_ADDRESS: `[::]:${port}` })).code, 0, ':: → ::1')
    t.same(paths, ['/healthz', '/healthz'])
  })

  t.test('anything but 200, or nobody listening, is unhealthy', async t => {
    const port = await listen(t, '127.0.0.1', 503, [])
    t.equal((await runHealthcheck({ EGRESS_HEALTH_ADDRESS: `127.0.0.1:${port}` })).code, 1)
    const closed = createServer()
    await new Promise<void>((resolve) => closed.listen(0, '127.0.0.1', resolve))
    const gone = (closed.address() as AddressInfo).port
    await new Promise<void>((resolve) => closed.close(() => resolve()))
    const r = await runHealthcheck({ EGRESS_HEALTH_ADDRESS: `127.0.0.1:${gone}` })
    t.equal(r.code, 1)
    t.match(r.stderr, /ECONNREFUSED/)
    const bad = await runHealthcheck({ EGRESS_HEALTH_ADDRESS: 'no-port-here' })
    t.equal(bad.code, 1)
    t.match(bad.stderr, /bad EGRESS_HEALTH_ADDRESS/)
  })

  t.test('health listener turned off: nothing to check', async t => {
    t.equal((await runHealthcheck({ EGRESS_HEALTH_ADDRESS: '' })).code, 0)
  })

  t.test('default address is :9090', async t => {
    t.match(script, /EGRESS_HEALTH_ADDRESS\?\?':9090'/)
  })
})
