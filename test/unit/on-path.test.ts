import t from 'tap'
import { chmodSync, mkdirSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { onPath } from '../../src/on-path.js'

t.test('finds the first executable of that name on the path; skips non-executables and empty entries', async t => {
  const dir = t.testdir({})
  const a = join(dir, 'a'); const b = join(dir, 'b')
  mkdirSync(a); mkdirSync(b)
  writeFileSync(join(a, 'tool'), '#!/bin/sh\n'); chmodSync(join(a, 'tool'), 0o644)
  writeFileSync(join(b, 'tool'), '#!/bin/sh\n'); chmodSync(join(b, 'tool'), 0o755)
  t.equal(onPath('tool', `::${a}:${b}`), join(b, 'tool'), 'the executable one')
  t.equal(onPath('nosuch', `${a}:${b}`), null)
  t.equal(onPath('tool', ''), null, 'an empty path finds nothing')
})
