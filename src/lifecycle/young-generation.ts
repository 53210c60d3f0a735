/**
 * The size of V8's young generation. Under connection churn V8 grows each of its two semi-spaces from 1 MiB to
 * 16 MiB (growth factor 2) and keeps them: about 30 MiB of RSS in a proxy whose connections are otherwise 15-20 KiB
 * each. A growth factor of 1 stops them growing: they stay at the size they have when it is set, which is after
 * start-up. It is set at run time, with v8.setFlagsFromString, because V8 reads it each time it considers growing
 * (test/unit/lifecycle/young-generation.test.ts checks that against V8); on the command line the same kind of
 * flag cost start-up time (rules in place 139 → 183 ms in the bench) and `--max-semi-space-size`, read once when
 * the heap is made, has no effect at run time at all.
 *
 * An operator who set any semi-space flag (NODE_OPTIONS, or node's own arguments) keeps it: nothing is set then.
 */
import { setFlagsFromString } from 'node:v8'

export const YOUNG_GENERATION_FLAG = '--semi-space-growth-factor=1'

const SEMI_SPACE = /(?:^|\s)--(?:max|min)?[-_]?semi[-_]space[-_]/

/** The flag to set, or null when the operator chose the young generation's size already. Pure. */
export function youngGenerationFlag (execArgv: readonly string[], nodeOptions: string | undefined): string | null {
  if (execArgv.some((a) => SEMI_SPACE.test(a))) return null
  if (nodeOptions !== undefined && SEMI_SPACE.test(nodeOptions)) return null
  return YOUNG_GENERATION_FLAG
}

/** Sets the flag for this process (the daemon, a worker); returns what was set, for the log. */
export function capYoungGeneration (execArgv: readonly string[] = process.execArgv, nodeOptions = process.env.NODE_OPTIONS): string | null {
  const flag = youngGenerationFlag(execArgv, nodeOptions)
  if (flag !== null) setFlagsFromString(flag)
  return flag
}
