#!/usr/bin/env node
// Runs the whole suite with tap (TAP output passed through) and ends with one line
// `N passed, N failed, N skipped`, counting every test and subtest (not each assertion).
import { spawn } from 'node:child_process'
import { createInterface } from 'node:readline'

const args = process.argv.slice(2)
const child = spawn('npx', ['tap', '--reporter=tap', ...args], { stdio: ['ignore', 'pipe', 'inherit'] })
let passed = 0; let failed = 0; let skipped = 0
const failures = []
const rl = createInterface({ input: child.stdout })
// A test point with `# time=` is a test (assertions have none); depth 0 lines are whole files.
const point = /^(\s+)(not ok|ok) \d+ - (.*?)(?: # (SKIP|TODO)\b.*)?(?: # time=[\d.]+m?s)?$/
rl.on('line', (line) => {
  process.stdout.write(line + '\n')
  const m = point.exec(line)
  if (m === null || !(line.includes('# time=') || m[4] !== undefined)) return
  if (m[4] === 'SKIP' || m[4] === 'TODO') skipped++
  else if (m[2] === 'ok') passed++
  else { failed++; failures.push(m[3]) }
})
child.on('close', (code) => {
  if (failures.length > 0) process.stdout.write(`\nfailed:\n${failures.map((f) => `  - ${f}`).join('\n')}\n`)
  // a file that crashed before reporting its subtests still fails the run
  if (code !== 0 && failed === 0) failed = 1
  process.stdout.write(`\n${passed} passed, ${failed} failed, ${skipped} skipped\n`)
  process.exit(code ?? 1)
})
