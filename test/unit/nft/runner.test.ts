/**
 * The nft adapter without root: FakeNft behaves like the kernel's transactions (all or nothing, other tables
 * untouched), and ExecNft's process handling (missing binary, hung child, nft's words in errors) is exercised
 * against small stand-in executables. The real kernel is in test/netns/nft.test.ts.
 */
import t from 'tap'
import { chmodSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { NftError } from '../../../src/errors.js'
import { describeDrift, fingerprint, tableShape } from '../../../src/nft/drift.js'
import { ExecNft, FakeNft } from '../../../src/nft/runner.js'

const SCRIPT = `add table ip egress_router { comment "managed by egress-router"; }
flush table ip egress_router
add chain ip egress_router filter_input { type filter hook input priority filter; policy accept; comment "managed by egress-router"; }
add chain ip egress_router mark_prerouting { type filter hook prerouting priority dstnat + 10; policy accept; comment "managed by egress-router"; }
add chain ip egress_router nat_prerouting
delete chain ip egress_router nat_prerouting
add rule ip egress_router filter_input iifname "macvlan0" ct state established,related accept comment "replies from the LAN"
add rule ip egress_router filter_input iifname "macvlan0" counter drop comment "no new connections from the LAN"
`

async function rejection (p: Promise<unknown>): Promise<NftError> {
  const e = await p.then(() => null, (err: unknown) => err)
  if (!(e instanceof NftError)) throw new Error(`expected an NftError, got ${String(e)}`)
  return e
}

t.test('FakeNft: apply, read back, re-apply gives the same fingerprint', async t => {
  const nft = new FakeNft()
  t.equal(await nft.listTable('ip', 'egress_router'), null)
  await nft.apply(SCRIPT)
  const first = tableShape(await nft.listTable('ip', 'egress_router'))
  t.ok(first.present)
  t.same(first.chains.map(c => [c.name, c.base?.prio, c.rules.length]), [['filter_input', 0, 2], ['mark_prerouting', -90, 0]])
  await nft.apply(SCRIPT)
  t.equal(fingerprint(await nft.listTable('ip', 'egress_router')), first.digest)
})

t.test('FakeNft: a failing script changes nothing, like the kernel transaction', async t => {
  const nft = new FakeNft()
  await nft.apply(SCRIPT)
  const before = fingerprint(await nft.listTable('ip', 'egress_router'))
  const bad = SCRIPT.replace('flush table ip egress_router\n', 'flush table ip egress_router\nadd rule ip egress_router nowhere accept\n')
  const e = await rejection(nft.apply(bad))
  t.match(e.stderr, /No such file or directory\nadd rule ip egress_router nowhere accept/)
  t.equal(fingerprint(await nft.listTable('ip', 'egress_router')), before)
  await t.rejects(nft.apply('add frobnicate'), NftError)
  await t.rejects(nft.check(bad), NftError)
})

t.test('FakeNft: check validates without changing anything', async t => {
  const nft = new FakeNft()
  await nft.check(SCRIPT)
  t.equal(await nft.listTable('ip', 'egress_router'), null)
})

t.test('FakeNft: other tables survive apply and delete; delete is idempotent', async t => {
  const nft = new FakeNft()
  nft.tamper('add table ip foreign\nadd chain ip foreign c { type filter hook input priority 0; policy accept; }\nadd rule ip foreign c accept')
  await nft.apply(SCRIPT)
  await nft.deleteTable('ip', 'egress_router')
  await nft.deleteTable('ip', 'egress_router')
  t.same(nft.tables(), ['ip foreign'])
  t.same(nft.calls.map(c => c.op), ['apply', 'deleteTable', 'deleteTable'])
})

t.test('FakeNft: a chain cannot be deleted while it has rules, nor re-hooked', async t => {
  const nft = new FakeNft()
  await nft.apply(SCRIPT)
  t.match((await rejection(nft.apply('delete chain ip egress_router filter_input'))).stderr, /Device or resource busy/)
  t.match((await rejection(nft.apply(SCRIPT.replace('hook input priority filter', 'hook output priority filter')))).stderr, /Operation not supported/)
})

t.test('FakeNft: tampering is visible as drift', async t => {
  const nft = new FakeNft()
  await nft.apply(SCRIPT)
  const applied = await nft.listTable('ip', 'egress_router')
  const listing = applied
  const handle = (listing?.nftables.find(i => (i.rule as { comment?: string } | undefined)?.comment === 'no new connections from the LAN')?.rule as { handle: number }).handle
  nft.tamper(`delete rule ip egress_router filter_input handle ${handle}`)
  t.equal(describeDrift(applied, await nft.listTable('ip', 'egress_router')),
    'chain filter_input: rule removed: iifname "macvlan0" counter drop comment "no new connections from the LAN"')
  nft.tamper('flush ruleset')
  t.equal(describeDrift(applied, await nft.listTable('ip', 'egress_router')), 'table ip egress_router is missing')
})

t.test('FakeNft: queued failures and probe results', async t => {
  const nft = new FakeNft()
  nft.failNext(new NftError('nft rejected the ruleset', 'Error: boom', 1))
  t.equal((await rejection(nft.apply(SCRIPT))).stderr, 'Error: boom')
  t.equal(await nft.listTable('ip', 'egress_router'), null)
  await nft.apply(SCRIPT)
  t.same(await nft.probe(), { version: '1.0.6' })
  const denied = new FakeNft({ probe: new NftError('nft may not change rules', '', 1) })
  await t.rejects(denied.probe(), NftError)
})

// ---- ExecNft process handling, with stand-in executables ---------------------------------------------------

const dir = mkdtempSync(join(tmpdir(), 'ernft-'))
t.teardown(() => rmSync(dir, { recursive: true, force: true }))

function standIn (name: string, body: string): string {
  const path = join(dir, name)
  writeFileSync(path, `#!/bin/sh\n${body}\n`)
  chmodSync(path, 0o755)
  return path
}

t.test('ExecNft: a missing nft says to install nftables', async t => {
  const e = await rejection(new ExecNft({ binary: join(dir, 'no-such-nft') }).probe())
  t.match(e.message, /not found: install the nftables package/)
  t.equal(e.code, 'ERR_NFT')
})

t.test('ExecNft: a hung nft is killed at the timeout', async t => {
  const hung = standIn('hung', 'exec sleep 30')
  const e = await rejection(new ExecNft({ binary: hung, timeoutMs: 100 }).apply(SCRIPT))
  t.match(e.message, /timed out after 100 ms/)
  t.equal(e.exitCode, null)
})

t.test('ExecNft: a rejected script carries nft\'s stderr and exit code; stdin is the script', async t => {
  const echo = standIn('reject', 'cat > "$(dirname "$0")/stdin.txt"; echo "Error: syntax error, unexpected junk" >&2; exit 1')
  const e = await rejection(new ExecNft({ binary: echo }).apply(SCRIPT))
  t.match(e.message, /^nft rejected the ruleset \(nothing was changed\): Error: syntax error, unexpected junk$/)
  t.equal(e.exitCode, 1)
  const { readFileSync } = await import('node:fs')
  t.equal(readFileSync(join(dir, 'stdin.txt'), 'utf8'), SCRIPT)
})

t.test('ExecNft: an nft that exits without reading stdin is not an EPIPE crash', async t => {
  const early = standIn('early', 'echo "Error: early" >&2; exit 1')
  const e = await rejection(new ExecNft({ binary: early }).apply(SCRIPT.repeat(2000)))
  t.match(e.stderr, /Error: early/)
})

t.test('ExecNft: arguments of each operation', async t => {
  const args = standIn('args', 'echo "$*" >> "$(dirname "$0")/args.txt"; cat > /dev/null; case "$1" in --version) echo "nftables v1.0.9 (Old Doc Yak #3)";; -j) echo \'{"nftables": [{"metainfo": {}}]}\';; esac')
  const nft = new ExecNft({ binary: args })
  await nft.apply('x')
  await nft.check('x')
  t.same(await nft.listTable('ip6', 'egress_router'), { nftables: [{ metainfo: {} }] })
  await nft.deleteTable('ip6', 'egress_router')
  t.same(await nft.probe(), { version: '1.0.9' })
  const { readFileSync } = await import('node:fs')
  t.same(readFileSync(join(dir, 'args.txt'), 'utf8').trim().split('\n'), ['-f -', '-c -f -', '-j list table ip6 egress_router', '-f -', '--version', '-c -f -'])
})

t.test('ExecNft: listTable maps "No such file or directory" to null and refuses non-JSON', async t => {
  const missing = standIn('missing', 'echo "Error: No such file or directory" >&2; exit 1')
  t.equal(await new ExecNft({ binary: missing }).listTable('ip', 'egress_router'), null)
  const garbage = standIn('garbage', 'echo "table ip egress_router {"')
  await t.rejects(new ExecNft({ binary: garbage }).listTable('ip', 'egress_router'), { message: /not JSON/ })
  const other = standIn('other', 'echo "Error: Operation not permitted" >&2; exit 1')
  await t.rejects(new ExecNft({ binary: other }).listTable('ip', 'egress_router'), { message: /could not list table ip egress_router: Error: Operation not permitted/ })
})

t.test('ExecNft: probe names the missing capability', async t => {
  const eperm = standIn('eperm', 'case "$1" in --version) echo "nftables v1.0.6 (Lester Gooch #5)";; *) cat >/dev/null; echo "Error: Could not process rule: Operation not permitted" >&2; exit 1;; esac')
  await t.rejects(new ExecNft({ binary: eperm }).probe(), { message: /lacks CAP_NET_ADMIN/ })
  const nokernel = standIn('nokernel', 'case "$1" in --version) echo "nftables v1.0.6 (Lester Gooch #5)";; *) cat >/dev/null; echo "Error: Could not process rule: Protocol not supported" >&2; exit 1;; esac')
  await t.rejects(new ExecNft({ binary: nokernel }).probe(), { message: /no nf_tables support/ })
  const noversion = standIn('noversion', 'echo "hello"')
  await t.rejects(new ExecNft({ binary: noversion }).probe(), { message: /printed no version/ })
})
