/**
 * The adapter to the `nft` binary: an interface the daemon is given, the real implementation (ExecNft), and an
 * honest in-memory fake (FakeNft) for unit tests of callers (knftables exec.go + fake.go).
 */
import { spawn } from 'node:child_process'
import { NftError } from '../errors.js'
import type { NftFamily } from '../plan/ruleset.js'

/** What `nft -j list …` prints, parsed: `{ nftables: [ {metainfo}, {table}, {chain}…, {rule}… ] }`. */
export interface NftListing {
  readonly nftables: ReadonlyArray<Readonly<Record<string, unknown>>>
}

export interface NftProbe {
  /** e.g. `1.0.6` */
  readonly version: string
}

export interface NftRunner {
  /** `nft -f -`: the script is one transaction; all or nothing. */
  apply (script: string): Promise<void>
  /** `nft -c -f -`: the kernel validates the script and changes nothing. */
  check (script: string): Promise<void>
  /** `nft -j list table FAMILY TABLE`, parsed; null when the table does not exist. */
  listTable (family: NftFamily, table: string): Promise<NftListing | null>
  /** Deletes the table with everything in it; a table that is already gone is success. */
  deleteTable (family: NftFamily, table: string): Promise<void>
  /**
   * The table's own comment (`add table … { comment "…"; }`); null when the table does not exist, '' when it has
   * none. Read from the text listing: nft 1.0.6 leaves table and chain comments out of its JSON.
   */
  tableComment (family: NftFamily, table: string): Promise<string | null>
  /** Once at start: nft is there, which version, and we may change rules (CAP_NET_ADMIN). */
  probe (): Promise<NftProbe>
}

export interface ExecNftOptions {
  /** the nft binary; default `nft` from PATH */
  readonly binary?: string
  /** argv in front of nft, e.g. `['ip', 'netns', 'exec', 'lab-router']` (lab and tests) */
  readonly prefix?: readonly string[]
  /** every child is killed after this long; default 15 s */
  readonly timeoutMs?: number
}

interface RunResult {
  readonly stdout: string
  readonly stderr: string
  readonly code: number
}

/** Removes nft's context lines (the echoed script line and the ^^^ marker) only when there are too many. */
function shorten (stderr: string): string {
  const lines = stderr.trim().split('\n')
  return lines.length <= 12 ? lines.join('\n') : [...lines.slice(0, 12), `… (${lines.length - 12} more lines)`].join('\n')
}

const MAX_OUTPUT = 32 * 1024 * 1024

export class ExecNft implements NftRunner {
  readonly #binary: string
  readonly #prefix: readonly string[]
  readonly #timeoutMs: number

  constructor (opts: ExecNftOptions = {}) {
    this.#binary = opts.binary ?? 'nft'
    this.#prefix = opts.prefix ?? []
    this.#timeoutMs = opts.timeoutMs ?? 15_000
  }

  /** Runs nft once; rejects with NftError only when it could not run, hung, or flooded us. */
  #run (args: readonly string[], stdin: string | null): Promise<RunResult> {
    const argv = [...this.#prefix, this.#binary, ...args]
    const what = `nft ${args.join(' ')}`
    return new Promise((resolve, reject) => {
      const child = spawn(argv[0] as string, argv.slice(1), { stdio: ['pipe', 'pipe', 'pipe'] })
      const out: Buffer[] = []
      const err: Buffer[] = []
      let size = 0
      let failure: NftError | null = null
      const fail = (e: NftError): void => {
        if (failure === null) failure = e
        child.kill('SIGKILL')
      }
      const timer = setTimeout(() => {
        fail(new NftError(`${what} timed out after ${this.#timeoutMs} ms`, Buffer.concat(err).toString(), null))
      }, this.#timeoutMs)
      const collect = (into: Buffer[]) => (chunk: Buffer): void => {
        size += chunk.length
        if (size > MAX_OUTPUT) fail(new NftError(`${what} printed more than ${MAX_OUTPUT} bytes`, '', null))
        else into.push(chunk)
      }
      child.stdout.on('data', collect(out))
      child.stderr.on('data', collect(err))
      // nft may exit before reading all of stdin (a syntax error on line 1): EPIPE is not our error then.
      child.stdin.on('error', () => {})
      child.on('error', (e: NodeJS.ErrnoException) => {
        clearTimeout(timer)
        const message = e.code === 'ENOENT'
          ? `${argv[0]} not found: install the nftables package (needed to program the NAT and filter rules)`
          : `could not run ${what}: ${e.message}`
        reject(new NftError(message, '', null, { cause: e }))
      })
      child.on('close', (code, signal) => {
        clearTimeout(timer)
        if (failure !== null) return reject(failure)
        const stderr = Buffer.concat(err).toString()
        if (code === null) return reject(new NftError(`${what} was killed by ${signal ?? 'a signal'}`, stderr, null))
        resolve({ stdout: Buffer.concat(out).toString(), stderr, code })
      })
      child.stdin.end(stdin ?? '')
    })
  }

  async #runScript (args: readonly string[], script: string, what: string): Promise<void> {
    const r = await this.#run(args, script)
    if (r.code !== 0) throw new NftError(what, shorten(r.stderr), r.code)
  }

  async apply (script: string): Promise<void> {
    await this.#runScript(['-f', '-'], script, 'nft rejected the ruleset (nothing was changed)')
  }

  async check (script: string): Promise<void> {
    await this.#runScript(['-c', '-f', '-'], script, 'nft --check rejected the ruleset')
  }

  async listTable (family: NftFamily, table: string): Promise<NftListing | null> {
    const r = await this.#run(['-j', 'list', 'table', family, table], null)
    if (r.code !== 0) {
      if (/No such file or directory/.test(r.stderr)) return null
      throw new NftError(`nft could not list table ${family} ${table}`, shorten(r.stderr), r.code)
    }
    let parsed: unknown
    try {
      parsed = JSON.parse(r.stdout)
    } catch (e) {
      throw new NftError(`nft -j list table ${family} ${table} printed something that is not JSON`, r.stdout.slice(0, 200), r.code, { cause: e })
    }
    if (typeof parsed !== 'object' || parsed === null || !Array.isArray((parsed as { nftables?: unknown }).nftables)) {
      throw new NftError(`nft -j list table ${family} ${table} printed JSON without an nftables array`, r.stdout.slice(0, 200), r.code)
    }
    return parsed as NftListing
  }

  async tableComment (family: NftFamily, table: string): Promise<string | null> {
    const r = await this.#run(['list', 'table', family, table], null)
    if (r.code !== 0) {
      if (/No such file or directory/.test(r.stderr)) return null
      throw new NftError(`nft could not list table ${family} ${table}`, shorten(r.stderr), r.code)
    }
    // `table ip NAME {` then, before the first chain/set/map, an optional `comment "…"` line
    const head = r.stdout.split(/\n\s*(?:chain|set|map|flowtable|ct|counter|quota|limit|synproxy) /)[0] ?? ''
    return /^\s*comment "([^"]*)"\s*$/m.exec(head)?.[1] ?? ''
  }

  async deleteTable (family: NftFamily, table: string): Promise<void> {
    // add-then-delete in one transaction: succeeds whether or not the table exists, without matching stderr.
    await this.#runScript(['-f', '-'], `add table ${family} ${table}\ndelete table ${family} ${table}\n`,
      `nft could not delete table ${family} ${table}`)
  }

  async probe (): Promise<NftProbe> {
    const v = await this.#run(['--version'], null)
    const m = /v(\d+\.\d+(?:\.\d+)*)/.exec(v.stdout)
    if (v.code !== 0 || m === null) {
      throw new NftError(`${this.#binary} --version failed or printed no version`, shorten(v.stderr || v.stdout), v.code)
    }
    // A dry run goes to the kernel and back, so it proves the permission without changing anything.
    const c = await this.#run(['-c', '-f', '-'], 'add table ip egress_router\n')
    if (c.code !== 0) {
      if (/Operation not permitted|you must be root/.test(c.stderr)) {
        throw new NftError('nft may not change rules: the process lacks CAP_NET_ADMIN (run as root or grant the NET_ADMIN capability)', shorten(c.stderr), c.code)
      }
      if (/Protocol not supported|Address family not supported/.test(c.stderr)) {
        throw new NftError('the kernel has no nf_tables support (load the nf_tables module)', shorten(c.stderr), c.code)
      }
      throw new NftError('nft cannot program this kernel', shorten(c.stderr), c.code)
    }
    return { version: m[1] as string }
  }
}

/** The real runner, as the daemon uses it. */
export function createNftRunner (opts: ExecNftOptions = {}): NftRunner {
  return new ExecNft(opts)
}

// ---- the honest fake ---------------------------------------------------------------------------------------

interface FakeRule { handle: number, body: string, comment: string | null }
interface FakeChain {
  handle: number
  name: string
  base: { type: string, hook: string, prio: number, policy: string } | null
  rules: FakeRule[]
}
interface FakeTable { handle: number, family: string, name: string, comment: string | null, chains: FakeChain[], nextHandle: number }
type FakeState = FakeTable[]

const PRIORITIES: Readonly<Record<string, number>> = { raw: -300, mangle: -150, dstnat: -100, filter: 0, security: 50, srcnat: 100 }

function fakeError (message: string, line: string): NftError {
  return new NftError('nft rejected the ruleset (nothing was changed)', `Error: ${message}\n${line}`, 1)
}

function clone (state: FakeState): FakeState {
  return structuredClone(state)
}

/**
 * An in-memory nft that understands the commands this project writes (add/flush/delete table, add/delete chain,
 * add rule, delete rule … handle N, flush ruleset). A script runs against a copy that replaces the state only
 * if every line succeeded, as the kernel's transaction does. Listings have nft's JSON shape; a rule's `expr`
 * holds its text (`[{ "rule-text": "…" }]`) instead of the kernel's decoded expressions.
 */
export class FakeNft implements NftRunner {
  #state: FakeState = []
  #tableHandle = 0
  /** every call in order, for assertions: `apply`, `check`, `listTable`, `deleteTable`, `probe` */
  readonly calls: Array<{ readonly op: string, readonly arg: string }> = []
  #failures: NftError[] = []
  readonly #probe: NftProbe | NftError

  constructor (opts: { probe?: NftProbe | NftError } = {}) {
    this.#probe = opts.probe ?? { version: '1.0.6' }
  }

  /** The next apply/check/listTable/deleteTable call fails with this error (queued, one per call). */
  failNext (error: NftError): void {
    this.#failures.push(error)
  }

  /** Changes the state behind the daemon's back (another admin, `nft flush ruleset`): for drift tests. */
  tamper (script: string): void {
    this.#state = this.#run(script)
  }

  #takeFailure (): void {
    const f = this.#failures.shift()
    if (f !== undefined) throw f
  }

  async apply (script: string): Promise<void> {
    this.calls.push({ op: 'apply', arg: script })
    this.#takeFailure()
    this.#state = this.#run(script)
  }

  async check (script: string): Promise<void> {
    this.calls.push({ op: 'check', arg: script })
    this.#takeFailure()
    this.#run(script)
  }

  async listTable (family: NftFamily, table: string): Promise<NftListing | null> {
    this.calls.push({ op: 'listTable', arg: `${family} ${table}` })
    this.#takeFailure()
    const t = this.#state.find(x => x.family === family && x.name === table)
    if (t === undefined) return null
    const items: Array<Record<string, unknown>> = [
      { metainfo: { version: '1.0.6', release_name: 'fake', json_schema_version: 1 } },
      { table: { family, name: table, handle: t.handle } }
    ]
    for (const c of t.chains) {
      items.push({ chain: { family, table, name: c.name, handle: c.handle, ...(c.base ?? {}) } })
    }
    for (const c of t.chains) {
      for (const r of c.rules) {
        items.push({ rule: { family, table, chain: c.name, handle: r.handle, ...(r.comment === null ? {} : { comment: r.comment }), expr: [{ 'rule-text': r.body }] } })
      }
    }
    return { nftables: items }
  }

  async tableComment (family: NftFamily, table: string): Promise<string | null> {
    this.calls.push({ op: 'tableComment', arg: `${family} ${table}` })
    this.#takeFailure()
    const t = this.#state.find(x => x.family === family && x.name === table)
    return t === undefined ? null : t.comment ?? ''
  }

  async deleteTable (family: NftFamily, table: string): Promise<void> {
    this.calls.push({ op: 'deleteTable', arg: `${family} ${table}` })
    this.#takeFailure()
    this.#state = this.#state.filter(t => !(t.family === family && t.name === table))
  }

  async probe (): Promise<NftProbe> {
    this.calls.push({ op: 'probe', arg: '' })
    if (this.#probe instanceof NftError) throw this.#probe
    return this.#probe
  }

  /** Table names per family, for "no other table was touched" assertions. */
  tables (): string[] {
    return this.#state.map(t => `${t.family} ${t.name}`)
  }

  /** Runs a script on a copy of the state; returns the new state or throws without touching the old one. */
  #run (script: string): FakeState {
    const state = clone(this.#state)
    for (const raw of script.split('\n')) {
      const line = raw.trim()
      if (line === '' || line.startsWith('#')) continue
      this.#exec(state, line)
    }
    return state
  }

  #exec (state: FakeState, line: string): void {
    const table = (family: string, name: string): FakeTable => {
      const t = state.find(x => x.family === family && x.name === name)
      if (t === undefined) throw fakeError('Could not process rule: No such file or directory', line)
      return t
    }
    const chain = (t: FakeTable, name: string): FakeChain => {
      const c = t.chains.find(x => x.name === name)
      if (c === undefined) throw fakeError('Could not process rule: No such file or directory', line)
      return c
    }
    let m: RegExpExecArray | null
    if (line === 'flush ruleset') {
      state.length = 0
    } else if ((m = /^add table (ip6?|inet) (\w+)(?: \{ comment "([^"]*)"; \})?$/.exec(line)) !== null) {
      const [, family, name, comment] = m as unknown as [string, string, string, string | undefined]
      const t = state.find(x => x.family === family && x.name === name)
      if (t === undefined) state.push({ handle: ++this.#tableHandle, family, name, comment: comment ?? null, chains: [], nextHandle: 1 })
      else if (comment !== undefined) t.comment = comment
    } else if ((m = /^(flush|delete) table (ip6?|inet) (\w+)$/.exec(line)) !== null) {
      const [, verb, family, name] = m as unknown as [string, string, string, string]
      const t = table(family, name)
      if (verb === 'flush') for (const c of t.chains) c.rules = []
      else state.splice(state.indexOf(t), 1)
    } else if ((m = /^add chain (ip6?|inet) (\w+) (\w+)(?: \{ type (\w+) hook (\w+) priority (\w+(?: [+-] \d+)?|-?\d+); policy (accept|drop);(?: comment "[^"]*";)? \})?$/.exec(line)) !== null) {
      const [, family, tname, name, type, hook, prioText, policy] = m as unknown as [string, string, string, string, string?, string?, string?, string?]
      const t = table(family, tname)
      const base = type === undefined ? null : { type, hook: hook as string, prio: parsePriority(prioText as string, line), policy: policy as string }
      const existing = t.chains.find(x => x.name === name)
      if (existing === undefined) {
        t.chains.push({ handle: t.nextHandle++, name, base, rules: [] })
      } else if (base !== null) {
        if (existing.base === null || existing.base.type !== base.type || existing.base.hook !== base.hook || existing.base.prio !== base.prio) {
          throw fakeError('Could not process rule: Operation not supported', line)
        }
        existing.base.policy = base.policy
      }
    } else if ((m = /^delete chain (ip6?|inet) (\w+) (\w+)$/.exec(line)) !== null) {
      const [, family, tname, name] = m as unknown as [string, string, string, string]
      const t = table(family, tname)
      const c = chain(t, name)
      if (c.rules.length > 0) throw fakeError('Could not process rule: Device or resource busy', line)
      t.chains.splice(t.chains.indexOf(c), 1)
    } else if ((m = /^add rule (ip6?|inet) (\w+) (\w+) (.+)$/.exec(line)) !== null) {
      const [, family, tname, cname, rest] = m as unknown as [string, string, string, string, string]
      const t = table(family, tname)
      const c = chain(t, cname)
      const cm = /^(.*?) comment "([^"]*)"$/.exec(rest)
      c.rules.push({ handle: t.nextHandle++, body: cm === null ? rest : cm[1] as string, comment: cm === null ? null : cm[2] as string })
    } else if ((m = /^delete rule (ip6?|inet) (\w+) (\w+) handle (\d+)$/.exec(line)) !== null) {
      const [, family, tname, cname, handle] = m as unknown as [string, string, string, string, string]
      const c = chain(table(family, tname), cname)
      const i = c.rules.findIndex(r => r.handle === Number(handle))
      if (i < 0) throw fakeError('Could not process rule: No such file or directory', line)
      c.rules.splice(i, 1)
    } else {
      throw fakeError('syntax error (the fake understands only the commands egress-router writes)', line)
    }
  }
}

function parsePriority (text: string, line: string): number {
  const m = /^(\w+)(?: ([+-]) (\d+))?$/.exec(text)
  if (/^-?\d+$/.test(text)) return Number(text)
  if (m === null || PRIORITIES[m[1] as string] === undefined) throw fakeError(`unknown priority ${text}`, line)
  const base = PRIORITIES[m[1] as string] as number
  return m[2] === undefined ? base : base + (m[2] === '+' ? 1 : -1) * Number(m[3])
}
