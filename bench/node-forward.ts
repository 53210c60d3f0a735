/**
 * The plain Node.js TCP forwarder, as anyone would write it: net.createServer, net.connect from the source
 * address, stream.pipe both ways. The floor of what a Node process pays per connection and per byte, measured
 * beside the dns-proxy forwarders (which add read buffers of their own, half-close, idle timeouts, retries
 * across addresses, metrics): a gap between the two is ours, a gap to haproxy below it is Node's.
 *
 *   node dist/bench/node-forward.js <listen-host> <source-address> <port>=<target>:<target-port> ...
 */
import net from 'node:net'

function main (argv: readonly string[]): void {
  const [listenHost, source, ...forwards] = argv
  if (listenHost === undefined || source === undefined || forwards.length === 0) {
    throw new Error('usage: node-forward <listen-host> <source-address> <port>=<target>:<target-port> ...')
  }
  for (const f of forwards) {
    const m = /^(\d+)=(.+):(\d+)$/.exec(f)
    if (m === null) throw new Error(`node-forward: not <port>=<target>:<target-port>: ${f}`)
    const [, port, host, targetPort] = m as unknown as [string, string, string, string]
    net.createServer({ noDelay: true }, (client) => {
      const upstream = net.connect({ host, port: Number(targetPort), localAddress: source, noDelay: true })
      client.pipe(upstream)
      upstream.pipe(client)
      client.on('error', () => { upstream.destroy() })
      upstream.on('error', () => { client.destroy() })
    }).listen({ host: listenHost, port: Number(port), backlog: 4096 })
  }
  process.on('SIGTERM', () => { process.exit(0) })
}

main(process.argv.slice(2))
