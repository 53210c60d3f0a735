/**
 * Summarises a V8 .cpuprofile (from `node --cpu-prof`): self time per function, heaviest first — the
 * "where does the daemon spend its CPU" evidence behind the tuning suggestions. Pure.
 */

interface ProfileNode {
  id: number
  callFrame: { functionName: string, url: string, lineNumber: number }
  hitCount?: number
}

export interface CpuProfile {
  nodes: ProfileNode[]
  startTime: number
  endTime: number
  samples?: number[]
}

export interface HotFunction {
  name: string
  where: string
  selfMs: number
  selfPct: number
}

/** Top `limit` functions by self time (samples × the mean sampling interval). */
export function hotFunctions (profile: CpuProfile, limit = 15): HotFunction[] {
  const totalHits = profile.nodes.reduce((a, n) => a + (n.hitCount ?? 0), 0)
  if (totalHits === 0) return []
  const msPerHit = (profile.endTime - profile.startTime) / 1000 / totalHits
  const byKey = new Map<string, HotFunction>()
  for (const n of profile.nodes) {
    const hits = n.hitCount ?? 0
    if (hits === 0) continue
    const f = n.callFrame
    const name = f.functionName === '' ? '(anonymous)' : f.functionName
    const file = f.url.replace(/^file:\/\//, '').replace(/^.*\/(node_modules\/)/, '$1').replace(/^.*\/dist\//, 'dist/')
    const where = file === '' ? '' : `${file}:${f.lineNumber + 1}`
    const key = `${name} ${where}`
    const entry = byKey.get(key) ?? { name, where, selfMs: 0, selfPct: 0 }
    entry.selfMs += hits * msPerHit
    entry.selfPct += hits * 100 / totalHits
    byKey.set(key, entry)
  }
  return [...byKey.values()].sort((a, b) => b.selfMs - a.selfMs).slice(0, limit)
}
