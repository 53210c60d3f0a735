/**
 * The Lua script every wrk run gets: the request line (absolute-form for forward proxies), the Host
 * and Connection headers, and a done() hook that prints the exact counts and percentiles as one JSON
 * line (WRK_JSON_MARK) — wrk's own text rounds them. Pure: the text is built here, written by the caller.
 */
import { WRK_JSON_MARK } from './report.js'

export interface WrkScriptOptions {
  /** the request target: `/` for a TCP forward, `http://203.0.113.10/` (absolute-form) through a proxy */
  path: string
  /** the Host header */
  host: string
  /** `Connection: close`, so each request is a new connection */
  close: boolean
}

function luaString (s: string): string {
  if (!/^[\x20-\x7e]*$/.test(s)) throw new TypeError(`wrk script: not printable ASCII: ${JSON.stringify(s)}`)
  return `"${s.replace(/\\/g, '\\\\').replace(/"/g, '\\"')}"`
}

export function wrkScript (opts: WrkScriptOptions): string {
  const mark = WRK_JSON_MARK
  return [
    'wrk.method = "GET"',
    `wrk.path = ${luaString(opts.path)}`,
    `wrk.headers["Host"] = ${luaString(opts.host)}`,
    ...(opts.close ? ['wrk.headers["Connection"] = "close"'] : []),
    'done = function(summary, latency, requests)',
    '  local e = summary.errors',
    `  io.write(string.format('${mark}{"requests":%d,"duration_us":%d,"connect":%d,"read":%d,"write":%d,"timeout":%d,"status":%d,"p50_us":%d,"p99_us":%d}\\n',`,
    '    summary.requests, summary.duration, e.connect, e.read, e.write, e.timeout, e.status,',
    '    latency:percentile(50), latency:percentile(99)))',
    'end',
    ''
  ].join('\n')
}
