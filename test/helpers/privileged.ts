/**
 * Kernel tests need root. Outside CI they skip when not root; under CI=true a skip would hide a
 * broken machine, so it fails instead (vishvananda/netlink skipUnlessRoot, made strict for CI).
 */
import { execFileSync } from 'node:child_process'

export function privilegedSkipReason (): string | false {
  if (typeof process.getuid === 'function' && process.getuid() !== 0) return 'needs root'
  try {
    execFileSync('ip', ['netns', 'list'], { stdio: 'ignore' })
  } catch {
    return 'needs iproute2 (`ip`)'
  }
  return false
}

/** tap options for a privileged test: `t.test('...', privileged(), async t => ...)`. */
export function privileged (): { skip: string | false } {
  const reason = privilegedSkipReason()
  if (reason !== false && process.env.CI === 'true') {
    throw new Error(`privileged test cannot run under CI=true: ${reason}`)
  }
  return { skip: reason }
}
