/**
 * Error classes with a stable `code`, thrown with context and logged once at the edge (cli / daemon).
 */

/** One problem in the configuration: which variable, which line (1-based, 0 = the whole value), the text. */
export interface ConfigIssue {
  variable: string
  line: number
  text: string
  message: string
}

/** Formats an issue as the one line SPEC.md shows: `EGRESS_DESTINATION line 3: '80 sctp 10.4.5.6': protocol must be tcp or udp`. */
export function formatIssue (issue: ConfigIssue): string {
  const where = issue.line > 0 ? `${issue.variable} line ${issue.line}` : issue.variable
  return issue.text === '' ? `${where}: ${issue.message}` : `${where}: '${issue.text}': ${issue.message}`
}

export class EgressError extends Error {
  readonly code: string
  constructor (code: string, message: string, options?: { cause?: unknown }) {
    super(message, options)
    this.code = code
    this.name = new.target.name
  }
}

/** The configuration is invalid; nothing was touched. Exit code 2. */
export class ConfigError extends EgressError {
  readonly issues: readonly ConfigIssue[]
  constructor (issues: readonly ConfigIssue[]) {
    super('ERR_CONFIG', issues.map(formatIssue).join('\n'))
    this.issues = issues
  }
}

/** A setup step failed; `rolledBack` names what was undone. Exit code 1. */
export class ApplyError extends EgressError {
  readonly step: string
  readonly rolledBack: readonly string[]
  constructor (step: string, rolledBack: readonly string[], cause: unknown) {
    const why = cause instanceof Error ? cause.message : String(cause)
    const undone = rolledBack.length > 0 ? `; rolled back: ${rolledBack.join(', ')}` : '; nothing to roll back'
    super('ERR_APPLY', `${step} failed: ${why}${undone}`, { cause })
    this.step = step
    this.rolledBack = rolledBack
  }
}

/** `nft` rejected a script or could not run; `stderr` is nft's own words. */
export class NftError extends EgressError {
  readonly stderr: string
  readonly exitCode: number | null
  constructor (message: string, stderr: string, exitCode: number | null, options?: { cause?: unknown }) {
    super('ERR_NFT', stderr.trim() === '' ? message : `${message}: ${stderr.trim()}`, options)
    this.stderr = stderr
    this.exitCode = exitCode
  }
}

/** A kernel request over rtnetlink failed (`errno` like 'EEXIST', 'ENODEV', or 'ETIMEDOUT'). */
export class NetlinkError extends EgressError {
  readonly errno: string
  readonly operation: string
  constructor (operation: string, errno: string, options?: { cause?: unknown }) {
    super('ERR_NETLINK', `${operation}: ${errno}`, options)
    this.errno = errno
    this.operation = operation
  }
}

/** A DNS lookup failed (SERVFAIL, timeout, no nameserver) — NXDOMAIN is an answer, not this. */
export class DnsError extends EgressError {
  readonly name_: string
  constructor (code: string, name: string, message: string, options?: { cause?: unknown }) {
    super(code, `${name}: ${message}`, options)
    this.name_ = name
  }
}
