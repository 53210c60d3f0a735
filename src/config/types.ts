/**
 * The validated, immutable configuration: what every later stage (plan, apply, serve) reads.
 * Built only by parseConfig (config.ts) from RawSettings; never from process.env directly.
 */

export type Family = 4 | 6

/** EGRESS_ROUTER_MODE as the user wrote it. `legacy` and `redirect` behave the same. */
export type ModeName = 'init' | 'legacy' | 'redirect' | 'http-proxy' | 'dns-proxy' | 'unit-test'
/** What the daemon does: `init` sets up and exits; `redirect` sets up and stays. */
export type Mode = 'init' | 'redirect' | 'http-proxy' | 'dns-proxy' | 'unit-test'

/** A single address in canonical text form (`net.SocketAddress` canonicalisation, IPv6 compressed, lower case). */
export interface IpAddress {
  readonly address: string
  readonly family: Family
}

/** An address with a prefix length; for a network the address is the network address. */
export interface Cidr extends IpAddress {
  readonly prefix: number
}

/** EGRESS_SOURCE: the host address plus the prefix of the macvlan network (default /32 or /128). */
export interface SourceAddress extends Cidr {
  /** true when the user wrote `/N`; without it the address is a host route only. */
  readonly prefixGiven: boolean
}

// ---- EGRESS_DESTINATION (redirect) -------------------------------------------------------------

export type Protocol = 'tcp' | 'udp'

/** `<localport> <tcp|udp> <ip> [<remoteport>]` */
export interface PortRedirect {
  readonly kind: 'port'
  readonly line: number
  readonly protocol: Protocol
  readonly port: number
  readonly target: IpAddress
  /** equals `port` when the line had no remote port */
  readonly targetPort: number
  /** the line wrote a remote port (even one equal to `port`): unit-test mode prints `ip:port` then, as the old router */
  readonly targetPortGiven: boolean
}

/** `<ip>` as the last rule: every other port and protocol. */
export interface FallbackRedirect {
  readonly kind: 'fallback'
  readonly line: number
  readonly target: IpAddress
}

export interface RedirectConfig {
  readonly rules: readonly PortRedirect[]
  readonly fallback: FallbackRedirect | null
}

// ---- EGRESS_HTTP_PROXY_DESTINATION (http-proxy ACL) ---------------------------------------------

export type AclMatch =
  /** `host.example.com`: that host only (lower case, no trailing dot) */
  | { readonly kind: 'host', readonly name: string }
  /** `*.example.com`: example.com and every subdomain (`domain` = `example.com`) */
  | { readonly kind: 'domain', readonly domain: string }
  /** `192.0.2.7`, `192.0.2.0/24`, `2001:db8::/32` (a single address has prefix 32/128) */
  | { readonly kind: 'cidr', readonly cidr: Cidr }
  /** `*` alone: everything; must be the last rule */
  | { readonly kind: 'any' }

export interface AclRule {
  readonly line: number
  /** the rule as written, trimmed: used in logs and 403 answers */
  readonly text: string
  readonly action: 'allow' | 'deny'
  readonly match: AclMatch
}

export interface HttpProxyConfig {
  readonly port: number
  /** ports CONNECT may reach; `'*'` = any */
  readonly connectPorts: readonly number[] | '*'
  /** client networks allowed to use the proxy; null = any on the pod side */
  readonly clients: readonly Cidr[] | null
  /** log every allowed request and tunnel at info (EGRESS_HTTP_PROXY_ACCESS_LOG); denials are logged either way */
  readonly accessLog: boolean
  readonly acl: readonly AclRule[]
}

// ---- EGRESS_DNS_PROXY_DESTINATION (dns-proxy) ---------------------------------------------------

export type ForwardTarget =
  | { readonly kind: 'ip', readonly address: IpAddress }
  /** lower case, no trailing dot, contains a dot */
  | { readonly kind: 'name', readonly name: string }

export interface DnsForward {
  readonly line: number
  readonly port: number
  readonly target: ForwardTarget
  readonly targetPort: number
}

/**
 * EGRESS_DNS_PROXY_FORWARDING: who relays the forwards. `proxy` (the default, as the OpenShift image's
 * haproxy): the process accepts and connects. `kernel`: DNAT rules, as in redirect mode, and no process
 * in the data path; a host-name target's rule is rewritten as the name's addresses change.
 */
export type DnsForwarding = 'proxy' | 'kernel'

export interface DnsProxyConfig {
  /** every line of EGRESS_DNS_PROXY_DESTINATION, in order */
  readonly forwards: readonly DnsForward[]
  readonly forwarding: DnsForwarding
}

// ---- the whole ---------------------------------------------------------------------------------

export type MacvlanMode = 'bridge' | 'private' | 'vepa' | 'passthru'

export type MacSetting =
  | { readonly kind: 'stable' }
  | { readonly kind: 'random' }
  /** lower case `aa:bb:cc:dd:ee:ff`, unicast */
  | { readonly kind: 'fixed', readonly mac: string }

export type Routing = 'pod' | 'host'
export type LogLevel = 'trace' | 'debug' | 'info' | 'warn' | 'error' | 'fatal' | 'silent'

/** Where each destination configuration came from, so SIGHUP knows what to re-read. */
export interface ConfigSources {
  readonly destinationFile: string | null
  readonly httpProxyDestinationFile: string | null
  readonly dnsProxyDestinationFile: string | null
}

export interface Config {
  readonly modeName: ModeName
  readonly mode: Mode
  readonly source: SourceAddress
  readonly gateway: IpAddress
  /** parent NIC; null = the link of the default route (a host fact, resolved when planning) */
  readonly interface: string | null
  readonly macvlan: {
    readonly name: string
    readonly mode: MacvlanMode
    readonly mac: MacSetting
  }
  readonly podInterface: string
  readonly routing: Routing
  /** present in init / redirect / unit-test */
  readonly redirect: RedirectConfig | null
  /** present in http-proxy */
  readonly httpProxy: HttpProxyConfig | null
  /** present in dns-proxy */
  readonly dnsProxy: DnsProxyConfig | null
  /** null = no health listener (EGRESS_HEALTH_ADDRESS set to empty); host '' = every address */
  readonly health: { readonly host: string, readonly port: number } | null
  /**
   * EGRESS_WORKERS: processes that accept and relay in the proxy modes (1 = the daemon itself);
   * 'auto' = one per CPU available to the process, resolved when the daemon starts
   */
  readonly workers: number | 'auto'
  readonly drainTimeoutMs: number
  readonly dns: {
    readonly minTtlMs: number
    readonly maxTtlMs: number
    readonly maxStaleMs: number
  }
  readonly logLevel: LogLevel
  readonly sources: ConfigSources
}

/**
 * Raw settings: variable name → value, after flags have overridden env and `_FILE` variables
 * have been read (their content under the variable they stand for, their path under the `_FILE` name).
 * Produced only by src/config/env.ts.
 */
export type RawSettings = Readonly<Record<string, string | undefined>>
