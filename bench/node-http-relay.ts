/**
 * The plain Node.js keep-alive HTTP relay, the least a Node forward proxy can do per request: net sockets,
 * the request head found with indexOf and rewritten to origin form, a pool of idle upstream connections per
 * destination, the response framed by its Content-Length and written on as read, the client's connection
 * closed after the answer when it asked (`Connection: close`). No header validation, no ACL, no chunked
 * bodies, no timeouts, no CONNECT — a floor for the http-proxy's keep-alive figure, measured beside it (a
 * gap between the two is node:http, undici and ours; a gap to squid below it is Node's).
 *
 *   node dist/bench/node-http-relay.js <listen-host> <port> <source-address>
 */
import net from 'node:net'

const CRLF2 = Buffer.from('\r\n\r\n')
const idle = new Map<string, net.Socket[]>()

interface Exchange {
  /** the client the answer goes to */
  client: net.Socket
  /** response bytes still to come; -1 until the response head has been read */
  left: number
  head: Buffer
  /** the client asked for Connection: close */
  close: boolean
  done: () => void
}

const exchanges = new WeakMap<net.Socket, Exchange>()

function upstreamFor (key: string, host: string, port: number, source: string): net.Socket {
  const pooled = idle.get(key)?.pop()
  if (pooled !== undefined) return pooled
  const s = net.connect({ host, port, localAddress: source, noDelay: true })
  s.on('data', (chunk: Buffer) => { onResponseBytes(s, chunk) })
  s.on('error', () => {})
  s.on('close', () => {
    const list = idle.get(key)
    const i = list?.indexOf(s) ?? -1
    if (list !== undefined && i >= 0) list.splice(i, 1)
    exchanges.get(s)?.done()
  })
  return s
}

function onResponseBytes (s: net.Socket, chunk: Buffer): void {
  const x = exchanges.get(s)
  if (x === undefined) { s.destroy(); return }
  if (x.left < 0) {
    x.head = x.head.length === 0 ? chunk : Buffer.concat([x.head, chunk])
    const end = x.head.indexOf(CRLF2)
    if (end < 0) return
    const head = x.head.toString('latin1', 0, end)
    const m = /\r\ncontent-length:\s*(\d+)/i.exec(head)
    const body = x.head.subarray(end + 4)
    // the destination's connection is kept; the client's is closed after this answer when it asked
    if (x.close) x.client.write(Buffer.concat([Buffer.from(`${head.replace(/\r\nconnection:[^\r]*/gi, '')}\r\nConnection: close\r\n\r\n`, 'latin1'), body]))
    else x.client.write(x.head)
    x.left = m === null ? Number.POSITIVE_INFINITY : Number(m[1]) - body.length
  } else {
    x.client.write(chunk)
    x.left -= chunk.length
  }
  if (x.left <= 0) x.done()
}

function main (argv: readonly string[]): void {
  const [listenHost, port, source] = argv
  if (listenHost === undefined || port === undefined || source === undefined) throw new Error('usage: node-http-relay <listen-host> <port> <source-address>')
  net.createServer({ noDelay: true }, (c) => {
    let buf: Buffer = Buffer.alloc(0)
    let busy = false
    c.on('error', () => {})
    const next = (): void => {
      const end = buf.indexOf(CRLF2)
      if (busy || end < 0) return
      const lines = buf.toString('latin1', 0, end).split('\r\n')
      buf = buf.subarray(end + 4)
      const [method, target, version] = (lines[0] ?? '').split(' ')
      const t = /^http:\/\/([^/:]+)(?::(\d+))?(\/.*)?$/.exec(target ?? '')
      if (t === null) { c.end('HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\n\r\n'); return }
      const host = t[1] as string
      const tport = Number(t[2] ?? 80)
      const key = `${host}:${tport}`
      let out = `${method ?? ''} ${t[3] ?? '/'} ${version ?? ''}\r\n`
      for (let i = 1; i < lines.length; i++) if (!/^(?:proxy-)?connection:/i.test(lines[i] as string)) out += `${lines[i] as string}\r\n`
      const close = lines.some((l) => /^connection:\s*close\s*$/i.test(l))
      const up = upstreamFor(key, host, tport, source)
      busy = true
      exchanges.set(up, {
        client: c,
        left: -1,
        head: Buffer.alloc(0),
        close,
        done: () => {
          exchanges.delete(up)
          if (!up.destroyed) { let l = idle.get(key); if (l === undefined) idle.set(key, l = []); l.push(up) } else if (!c.destroyed) c.destroy()
          busy = false
          if (close) c.end(); else next()
        }
      })
      up.write(out + '\r\n')
    }
    c.on('data', (d: Buffer) => { buf = buf.length === 0 ? d : Buffer.concat([buf, d]); next() })
  }).listen({ host: listenHost, port: Number(port), backlog: 4096 })
  process.on('SIGTERM', () => { process.exit(0) })
}

main(process.argv.slice(2))
