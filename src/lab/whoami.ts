/**
 * The lab's destination: a tiny HTTP server that answers every request with the address it came from, and
 * reports each one as a JSON line on stdout — "what the destination saw". Run in the dest namespace:
 * `node dist/src/lab/whoami.js PORT [PORT…]`.
 */
import { createServer } from 'node:http'
import { pathToFileURL } from 'node:url'

export function serveWhoami (ports: readonly number[], host = '::'): void {
  for (const port of ports) {
    const server = createServer((req, res) => {
      const peer = (req.socket.remoteAddress ?? '?').replace(/^::ffff:/, '')
      const local = (req.socket.localAddress ?? '?').replace(/^::ffff:/, '')
      process.stdout.write(JSON.stringify({ event: 'request', peer, local, port: req.socket.localPort, method: req.method, url: req.url }) + '\n')
      res.writeHead(200, { 'content-type': 'text/plain' }).end(`you are ${peer} (this is ${local} port ${String(req.socket.localPort)})\n`)
    })
    server.listen({ host, port, ipv6Only: false }, () => {
      process.stdout.write(JSON.stringify({ event: 'listening', port }) + '\n')
    })
  }
}

if (import.meta.url === pathToFileURL(process.argv[1] ?? '').href) {
  serveWhoami(process.argv.slice(2).map(Number))
}
