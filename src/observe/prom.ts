/**
 * The prom-client classes the daemon uses, loaded from their own files instead of prom-client's index. The index
 * also loads its Pushgateway, which requires `https` and `zlib`: that is tls, node:crypto and OpenSSL's
 * initialisation in a daemon that never pushes and has no TLS anywhere, for ~2 MiB of RSS that stays.
 * The files are those of the exact version in package.json; types are in src/types/prom-client-metrics.d.ts.
 */
import AggregatorRegistry from 'prom-client/lib/cluster.js'
import Counter from 'prom-client/lib/counter.js'
import Gauge from 'prom-client/lib/gauge.js'
import Registry from 'prom-client/lib/registry.js'

export { AggregatorRegistry, Counter, Gauge, Registry }
