/**
 * The mirrors run before every read of the metrics (Metrics.beforeScrape): counts kept elsewhere in plain
 * numbers (the proxies' hot-path counters, the DNS client's statistics) are brought into prom-client.
 * Free of prom-client itself, so the health listener can use it before the metrics are loaded.
 */
export function runMirrors (mirrors: Iterable<() => void>): void {
  for (const sync of mirrors) {
    try { sync() } catch { /* a mirror that fails keeps its last values; the read goes on */ }
  }
}
