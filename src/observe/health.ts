/**
 * The health listener: /healthz (the process is alive and its loop turns), /readyz (every readiness check
 * passes: network set up, rules in place, listeners open, names resolved), /metrics (Prometheus text).
 */
import { createServer, type Server } from 'node:http'
import type { AddressInfo } from 'node:net'
import type { Metrics } from './metrics.js'
import { runMirrors } from './mirrors.js'

/** Named readiness checks; /readyz is ok only when every registered check is ok. */
export class Readiness {
  readonly #checks = new Map<string, { ok: boolean, detail: string }>()
  readonly #onChange: (ready: boolean) => void

  constructor (onChange: (ready: boolean) => void = () => {}) {
    this.#onChange = onChange
  }

  set (name: string, ok: boolean, detail = ''): void {
    const before = this.ready()
    const prev = this.#checks.get(name)
    if (prev !== undefined && prev.ok === ok && prev.detail === detail) return
    this.#checks.set(name, { ok, detail })
    const after = this.ready()
    if (before !== after) this.#onChange(after)
  }

  delete (name: string): void {
    const before = this.ready()
    this.#checks.delete(name)
    if (before !== this.ready()) this.#onChange(this.ready())
  }

  ready (): boolean {
    if (this.#checks.size === 0) return false
    for (const c of this.#checks.values()) if (!c.ok) return false
    return true
  }

  report (): Record<string, { ok: boolean, detail: string }> {
    return Object.fromEntries(this.#checks)
  }
}

export interface HealthServer {
  readonly server: Server
  listen (host: string, port: number): Promise<AddressInfo>
  close (): Promise<void>
}

/** `scrape` renders /metrics (default: the metrics' own registry; with workers, theirs merged in). */
export function createHealthServer (opts: { readiness: Readiness, metrics: Metrics, scrape?: () => Promise<string> }): HealthServer {
  const scrape = opts.scrape ?? (async () => await opts.metrics.registry.metrics())
  const server = createServer((req, res) => {
    const path = (req.url ?? '/').split('?')[0]
    if (req.method !== 'GET' && req.method !== 'HEAD') {
      res.writeHead(405, { allow: 'GET, HEAD' }).end()
      return
    }
    if (path === '/healthz') {
      res.writeHead(200, { 'content-type': 'text/plain' }).end('ok\n')
    } else if (path === '/readyz') {
      const ready = opts.readiness.ready()
      const body = JSON.stringify({ ready, checks: opts.readiness.report() }) + '\n'
      res.writeHead(ready ? 200 : 503, { 'content-type': 'application/json' }).end(body)
    } else if (path === '/metrics') {
      runMirrors(opts.metrics.beforeScrape)
      scrape().then((text) => {
        res.writeHead(200, { 'content-type': opts.metrics.registry.contentType }).end(text)
      }, (err: Error) => {
        res.writeHead(500, { 'content-type': 'text/plain' }).end(`${err.message}\n`)
      })
    } else {
      res.writeHead(404, { 'content-type': 'text/plain' }).end('not found\n')
    }
  })
  server.keepAliveTimeout = 5_000
  server.headersTimeout = 10_000
  server.requestTimeout = 10_000
  server.on('clientError', (_err, socket) => { socket.destroy() })
  return {
    server,
    listen: async (host, port) => await new Promise((resolve, reject) => {
      server.once('error', reject)
      server.listen({ host: host === '' ? undefined : host, port }, () => {
        server.off('error', reject)
        resolve(server.address() as AddressInfo)
      })
    }),
    close: async () => await new Promise<void>((resolve) => {
      server.close(() => resolve())
      server.closeAllConnections()
    })
  }
}
