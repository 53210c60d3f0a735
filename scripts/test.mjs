#!/usr/bin/env node
// Runs the whole suite with tap (TAP output passed through) and ends with one line
// `N passed, N failed, N skipped`, counting every test and subtest (not each assertion).
// Before that line it prints each failed assertion again, with the test it belongs to and tap's diagnostics:
// a CI log is often read from its end, and the details would otherwise be thousands of lines further up.
import { spawn } from 'node:child_process'
import { createInterface } from 'node:readline'

const args = process.argv.slice(2)
const child = spawn('npx', ['tap', '--reporter=tap', ...args], { stdio: ['ignore', 'pipe', 'inherit'] })
let passed = 0; let failed = 0; let skipped = 0
const failures = []
/** failed assertions: where (the subtests around it), the line and its YAML diagnostics */
const details = []
const MAX_DETAILS = 20
const MAX_DETAIL_LINES = 80
/** the open `# Subtest: NAME` at each indentation */
const subtests = []
/** the failed assertion whose YAML block is being read, and the indentation that block ends at */
let reading = null
const rl = createInterface({ input: child.stdout })
// A test point with `# time=` is a test (assertions have none); depth 0 lines are whole files.
const point = /^(\s+)(not ok|ok) \d+ - (.*?)(?: # (SKIP|TODO)\b.*)?(?: # time=[\d.]+m?s)?$/
const subtest = /^(\s*)# Subtest: (.*)$/
rl.on('line', (line) => {
  process.stdout.write(line + '\n')
  if (reading !== null) {
    if (reading.lines.length < MAX_DETAIL_LINES) reading.lines.push(`    ${line.slice(reading.indent.length)}`)
    if (line === `${reading.indent}...`) reading = null
    return
  }
  const s = subtest.exec(line)
  if (s !== null) {
    const depth = s[1].length / 4
    subtests.length = depth
    subtests[depth] = s[2]
    return
  }
  const m = point.exec(line)
  if (m === null) return
  const isTest = line.includes('# time=') || m[4] !== undefined
  if (!isTest) {
    if (m[2] === 'not ok' && details.length < MAX_DETAILS) {
      const where = subtests.slice(0, m[1].length / 4).filter((n) => n !== undefined).join(' › ')
      reading = { indent: `${m[1]}  `, lines: [`${where}:`, `  ${line.trimStart()}`] }
      details.push(reading.lines)
    }
    return
  }
  if (m[4] === 'SKIP' || m[4] === 'TODO') skipped++
  else if (m[2] === 'ok') passed++
  else { failed++; failures.push(m[3]) }
})
child.on('close', (code) => {
  if (details.length > 0) {
    process.stdout.write(`\nfailed assertions${details.length === MAX_DETAILS ? ` (the first ${MAX_DETAILS})` : ''}:\n`)
    for (const d of details) process.stdout.write(`  ${d.join('\n  ')}\n`)
  }
  if (failures.length > 0) process.stdout.write(`\nfailed:\n${failures.map((f) => `  - ${f}`).join('\n')}\n`)
  // a file that crashed before reporting its subtests still fails the run
  if (code !== 0 && failed === 0) failed = 1
  process.stdout.write(`\n${passed} passed, ${failed} failed, ${skipped} skipped\n`)
  process.exit(code ?? 1)
})
