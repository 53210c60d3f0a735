import { spawnSync } from 'node:child_process'
import t from 'tap'
import { YOUNG_GENERATION_FLAG, youngGenerationFlag } from '../../../src/lifecycle/young-generation.js'

t.test('the flag is set unless the operator chose a semi-space flag', async (t) => {
  t.equal(youngGenerationFlag([], undefined), YOUNG_GENERATION_FLAG)
  t.equal(youngGenerationFlag([], ''), YOUNG_GENERATION_FLAG)
  t.equal(youngGenerationFlag(['--enable-source-maps'], '--max-old-space-size=256'), YOUNG_GENERATION_FLAG, 'other heap flags are not this one')
  for (const flag of ['--max-semi-space-size=4', '--min-semi-space-size=2', '--semi-space-growth-factor=2', '--max_semi_space_size=8']) {
    t.equal(youngGenerationFlag([flag], undefined), null, `${flag} in node's arguments`)
    t.equal(youngGenerationFlag([], flag), null, `${flag} alone in NODE_OPTIONS`)
    t.equal(youngGenerationFlag([], `--enable-source-maps ${flag} --trace-warnings`), null, `${flag} among others in NODE_OPTIONS`)
  }
})

/**
 * What the flag is for, checked against V8 itself (a Node upgrade that stopped honouring it at run time fails here):
 * a process that allocates short-lived objects keeps a small young generation with the flag set at run time, and
 * grows it without. Sizes, not times.
 */
t.test('set at run time, the flag keeps the young generation at its starting size under churn', async (t) => {
  // plain JavaScript, no loader: the TypeScript loader's own churn would grow the young generation first
  const churn = (flag: string | null): number => {
    const script = `
      const v8 = await import('node:v8');
      const flag = process.env.YOUNG_GENERATION_FLAG;
      if (flag !== 'none') v8.setFlagsFromString(flag);
      let kept = 0;
      for (let r = 0; r < 200; r++) { const a = []; for (let i = 0; i < 20000; i++) a.push({ i, s: 'x' + i }); kept += a.length }
      const s = v8.getHeapSpaceStatistics().find((x) => x.space_name === 'new_space');
      process.stdout.write(String(s.space_size));`
    const r = spawnSync(process.execPath, ['--input-type=module', '-e', script], { encoding: 'utf8', env: { ...process.env, NODE_OPTIONS: '', YOUNG_GENERATION_FLAG: flag ?? 'none' } })
    t.equal(r.status, 0, r.stderr)
    return Number(r.stdout) / 1048576
  }
  const capped = churn(YOUNG_GENERATION_FLAG)
  const grown = churn(null)
  t.ok(capped <= 8, `new space with the flag: ${capped.toFixed(1)} MiB`)
  t.ok(grown >= 4 * capped, `new space without it: ${grown.toFixed(1)} MiB (grew)`)
})
