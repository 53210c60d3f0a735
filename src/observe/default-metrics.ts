/**
 * prom-client's default metrics (process CPU, memory, descriptors, handles, heap, GC, Node version), each collector
 * loaded by path as collectDefaultMetrics loads them, all but its event-loop lag: that one is ours
 * (event-loop-lag.ts), sampled ten times a second instead of a hundred.
 */
import type { Registry } from 'prom-client'
import processCpuTotal from 'prom-client/lib/metrics/processCpuTotal.js'
import processStartTime from 'prom-client/lib/metrics/processStartTime.js'
import osMemoryHeap from 'prom-client/lib/metrics/osMemoryHeap.js'
import processOpenFileDescriptors from 'prom-client/lib/metrics/processOpenFileDescriptors.js'
import processMaxFileDescriptors from 'prom-client/lib/metrics/processMaxFileDescriptors.js'
import processResources from 'prom-client/lib/metrics/processResources.js'
import processHandles from 'prom-client/lib/metrics/processHandles.js'
import processRequests from 'prom-client/lib/metrics/processRequests.js'
import heapSizeAndUsed from 'prom-client/lib/metrics/heapSizeAndUsed.js'
import heapSpacesSizeAndUsed from 'prom-client/lib/metrics/heapSpacesSizeAndUsed.js'
import version from 'prom-client/lib/metrics/version.js'
import gc from 'prom-client/lib/metrics/gc.js'
import { registerEventLoopLag } from './event-loop-lag.js'

/** collectDefaultMetrics' own list (prom-client 15.1.3), in its order; eventLoopLag is registerEventLoopLag */
export const DEFAULT_COLLECTORS = {
  processCpuTotal,
  processStartTime,
  osMemoryHeap,
  processOpenFileDescriptors,
  processMaxFileDescriptors,
  eventLoopLag: (registry: Registry, config: { prefix: string }) => { registerEventLoopLag(registry, config.prefix) },
  processResources,
  processHandles,
  processRequests,
  heapSizeAndUsed,
  heapSpacesSizeAndUsed,
  version,
  gc
} as const

export function registerDefaultMetrics (registry: Registry, prefix: string): void {
  for (const register of Object.values(DEFAULT_COLLECTORS)) register(registry, { prefix })
}
