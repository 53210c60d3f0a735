// Types for prom-client's default collectors, which src/observe/default-metrics.ts loads by path: each file's
// module.exports registers its metrics on a registry (what collectDefaultMetrics does for each of them).
declare module 'prom-client/lib/metrics/*.js' {
  import type { Registry } from 'prom-client'
  const register: (registry: Registry, config?: { prefix?: string }) => void
  export default register
}
