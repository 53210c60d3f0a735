/**
 * Host names as the resolver takes them: validation, and the search-list expansion glibc's
 * res_search applies (resolv/res_query.c). Pure.
 */

const LABEL = /^[a-z0-9_](?:[a-z0-9_-]{0,61}[a-z0-9_])?$/i

/** Why `name` cannot be asked of DNS, or null when it can. A trailing dot (absolute name) is allowed. */
export function nameProblem (name: string): string | null {
  const bare = name.endsWith('.') ? name.slice(0, -1) : name
  if (bare === '') return 'empty host name'
  if (bare.length > 253) return 'host name longer than 253 characters'
  for (const label of bare.split('.')) {
    if (label === '') return 'empty label'
    if (label.length > 63) return `label '${label.slice(0, 16)}…' longer than 63 characters`
    // Letters, digits, '-' and '_' (service names such as _sip._tcp use it); a WHATWG URL host
    // is already punycode, so anything else is not a name a client meant.
    if (!LABEL.test(label)) return `label '${label}' has characters a host name cannot have`
  }
  return null
}

/**
 * The names to ask, in order, for `name` (lower case): an absolute name (trailing dot) only as
 * itself; a name with at least `ndots` dots as itself first, then with each search domain; one
 * with fewer dots with each search domain first, then as itself. Candidates over 253 characters
 * are left out.
 */
export function searchCandidates (name: string, search: readonly string[], ndots: number): string[] {
  if (name.endsWith('.')) return [name.slice(0, -1)]
  const dots = name.split('.').length - 1
  const qualified = search.map(domain => `${name}.${domain}`).filter(candidate => candidate.length <= 253)
  const all = dots >= ndots ? [name, ...qualified] : [...qualified, name]
  return [...new Set(all)]
}
