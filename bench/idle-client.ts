/**
 * Holds many idle tunnels open through the router, for the memory and CPU-per-connection figures. Runs
 * in the client namespace: `node dist/bench/idle-client.js HOST PORT [CONNECT_TARGET]`.
 *
 * Each tunnel is a TCP connection to HOST:PORT — through a forward proxy first `CONNECT target` and its
 * 200 — that then sends the start of an HTTP request (no final blank line), so the bytes cross the whole
 * path and the destination (nginx, waiting for the rest of the headers) holds its side open too.
 *
 * Commands on stdin, one per line: `open N` brings the total to N and answers with one JSON line;
 * stdin closing (or SIGTERM) destroys every socket and exits. Bounded: at most 200 connects in flight,
 * and an `open` gives up after its deadline, answering with what it has.
 */
import { connect, type Socket } from 'node:net'
import { createInterface } from 'node:readline'
import { pathToFileURL } from 'node:url'

const IN_FLIGHT = 200
const CONNECT_TIMEOUT_MS = 10_000

export interface OpenReport {
  event: 'opened'
  /** tunnels held now */
  total: number
  /** attempts that failed during this step */
  failed: number
  /** tunnels that were open and have since been closed by the other side */
  dropped: number
  ms: number
  firstError?: string
}

export class IdleHolder {
  readonly #sockets = new Set<Socket>()
  #dropped = 0
  constructor (readonly host: string, readonly port: number, readonly connectTarget: string | undefined) {}

  get size (): number { return this.#sockets.size }

  /** One tunnel: resolves once it carries the request start; rejects on error or after the timeout. */
  async #openOne (): Promise<void> {
    const socket = connect({ host: this.host, port: this.port })
    await new Promise<void>((resolve, reject) => {
      let held = false
      let settled = false
      const timer = setTimeout(() => { fail(new Error('timed out')) }, CONNECT_TIMEOUT_MS)
      const fail = (err: Error): void => {
        if (settled) return
        settled = true
        clearTimeout(timer)
        socket.destroy()
        reject(err)
      }
      const ready = (): void => {
        settled = true
        held = true
        clearTimeout(timer)
        socket.removeAllListeners('data')
        this.#sockets.add(socket)
        socket.write('GET / HTTP/1.1\r\nHost: bench\r\n')
        resolve()
      }
      // Errors after set-up end in 'close' too; a held tunnel closing is one the router or destination dropped.
      socket.on('error', (err) => { fail(err) })
      socket.once('close', () => {
        if (held) { if (this.#sockets.delete(socket)) this.#dropped++; return }
        fail(new Error('closed before it was set up'))
      })
      socket.once('connect', () => {
        if (this.connectTarget === undefined) { ready(); return }
        socket.write(`CONNECT ${this.connectTarget} HTTP/1.1\r\nHost: ${this.connectTarget}\r\n\r\n`)
        let head = ''
        socket.on('data', (chunk: Buffer) => {
          head += chunk.toString('latin1')
          const end = head.indexOf('\r\n\r\n')
          if (end === -1) {
            if (head.length > 16_384) fail(new Error('CONNECT answer too long'))
            return
          }
          const status = /^HTTP\/1\.[01] (\d{3})/.exec(head)
          if (status?.[1] !== '200') { fail(new Error(`CONNECT answered: ${head.split('\r\n')[0] ?? ''}`)); return }
          ready()
        })
      })
    })
  }

  /** Opens tunnels until `target` are held (or the deadline passes). */
  async openTo (target: number, deadlineMs: number): Promise<OpenReport> {
    const started = performance.now()
    const droppedBefore = this.#dropped
    let failed = 0
    let firstError: string | undefined
    let pending = Math.max(0, target - this.size)
    const deadline = Date.now() + deadlineMs
    const worker = async (): Promise<void> => {
      while (pending > 0 && Date.now() < deadline && failed <= Math.max(10, target / 100)) {
        pending--
        try {
          await this.#openOne()
        } catch (err) {
          failed++
          firstError ??= err instanceof Error ? err.message : String(err)
        }
      }
    }
    await Promise.all(Array.from({ length: Math.min(IN_FLIGHT, pending) }, worker))
    return { event: 'opened', total: this.size, failed, dropped: this.#dropped - droppedBefore, ms: Math.round(performance.now() - started), firstError }
  }

  closeAll (): void {
    for (const s of this.#sockets) s.destroy()
    this.#sockets.clear()
  }
}

function main (): void {
  const [host, port, connectTarget] = process.argv.slice(2)
  if (host === undefined || port === undefined) {
    process.stderr.write('usage: idle-client HOST PORT [CONNECT_TARGET]\n')
    process.exit(2)
  }
  const holder = new IdleHolder(host, Number(port), connectTarget)
  const rl = createInterface({ input: process.stdin })
  let queue = Promise.resolve()
  rl.on('line', (line) => {
    const m = /^open (\d+)(?: (\d+))?$/.exec(line.trim())
    if (m === null) return
    queue = queue.then(async () => {
      const report = await holder.openTo(Number(m[1]), Number(m[2] ?? 120_000))
      process.stdout.write(JSON.stringify(report) + '\n')
    })
  })
  const end = (): void => { holder.closeAll(); process.exit(0) }
  rl.once('close', end)
  process.once('SIGTERM', end)
}

if (import.meta.url === pathToFileURL(process.argv[1] ?? '').href) main()
