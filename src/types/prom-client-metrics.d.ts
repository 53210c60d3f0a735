// Types for prom-client's default collectors, which src/observe/default-metrics.ts loads by path: each file's
// module.exports registers its metrics on a registry (what collectDefaultMetrics does for each of them).
declare module 'prom-client/lib/metrics/*.js' {
  import type { Registry } from 'prom-client'
  const register: (registry: Registry, config?: { prefix?: string }) => void
  export default register
}

// prom-client's classes from their own files (src/observe/prom.ts): each file's module.exports is the class.
declare module 'prom-client/lib/counter.js' {
  import { Counter } from 'prom-client'
  export default Counter
}
declare module 'prom-client/lib/gauge.js' {
  import { Gauge } from 'prom-client'
  export default Gauge
}
declare module 'prom-client/lib/registry.js' {
  import { Registry } from 'prom-client'
  export default Registry
}
declare module 'prom-client/lib/cluster.js' {
  import { AggregatorRegistry } from 'prom-client'
  export default AggregatorRegistry
}
