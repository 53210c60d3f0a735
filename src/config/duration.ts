/**
 * Go-style durations, as the Kubernetes world writes them: `25s`, `300ms`, `1m30s`, `1.5h`, `24h`.
 * A bare number is seconds (`30` = `30s`), the unit a shell user would assume for a timeout.
 */
import type { Parsed } from './addr.js'

const UNIT_MS: Readonly<Record<string, number>> = {
  ns: 1e-6,
  us: 1e-3,
  µs: 1e-3, // U+00B5 micro sign, as Go accepts
  μs: 1e-3, // U+03BC greek mu, as Go accepts
  ms: 1,
  s: 1000,
  m: 60_000,
  h: 3_600_000
}

/** setTimeout's limit (2^31-1 ms, about 24.8 days): a longer timer would fire at once. */
export const MAX_DURATION_MS = 2_147_483_647

const BARE = /^(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)$/
const PART = /([0-9]+(?:\.[0-9]*)?|\.[0-9]+)(ns|us|µs|μs|ms|s|m|h)/y

/**
 * Duration text → whole milliseconds (sub-millisecond parts are rounded to the nearest ms).
 * Negative durations are rejected: every duration here is a timeout, a TTL or an age.
 */
export function parseDuration (text: string): Parsed<number> {
  const bad = { ok: false, message: 'must be a duration like 300ms, 25s, 1m30s or 24h (a bare number is seconds)' } as const
  if (text.length === 0 || text.length > 64) return bad
  let ms: number
  if (BARE.test(text)) {
    ms = Number(text) * 1000
  } else {
    ms = 0
    PART.lastIndex = 0
    while (PART.lastIndex < text.length) {
      const at = PART.lastIndex
      const m = PART.exec(text)
      if (m === null || m.index !== at) return bad
      ms += Number(m[1]) * UNIT_MS[m[2]!]!
    }
  }
  if (!Number.isFinite(ms)) return bad
  const rounded = Math.round(ms)
  if (rounded > MAX_DURATION_MS) return { ok: false, message: 'is too long (at most 596h31m23s)' }
  return { ok: true, value: rounded }
}

/** ms → the shortest Go-style text (`90000` → `1m30s`); for messages and `plan` output. */
export function formatDuration (ms: number): string {
  if (ms === 0) return '0s'
  let rest = ms
  let out = ''
  for (const [unit, size] of [['h', 3_600_000], ['m', 60_000], ['s', 1000]] as const) {
    const n = Math.floor(rest / size)
    if (n > 0) { out += `${n}${unit}`; rest -= n * size }
  }
  return rest > 0 ? `${out}${rest}ms` : out
}
