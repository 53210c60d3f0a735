/**
 * http-proxy mode end to end, with real traffic: the real daemon (bin/egress-router run) in the router
 * namespace, real curl in the client namespace (`curl -x` for plain HTTP, `curl -p -x` for CONNECT), a real
 * dnsmasq answering the names, and a destination server that checksums what it received and sent and reports
 * which source address it saw.
 */
import { createHash, randomBytes } from 'node:crypto'
import { readFileSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import t from 'tap'
import { LAB } from '../../src/lab/topology.js'
import { privileged } from '../helpers/privileged.js'
import { distMissing } from '../helpers/router-e2e.js'
import { curl, peerHost, PROXY_PORT, proxyTopology, scratchDir, seenBy, startDest, startDnsmasq, startProxy, type DestEvent } from '../helpers/http-proxy-e2e.js'

const missing = distMissing()
if (missing !== null) t.fail(missing)

const v4 = LAB.v4
const NAME = 'exact.lab.example'
const sha256 = (b: Buffer): string => createHash('sha256').update(b).digest('hex')
const MiB = 1024 * 1024

t.test('the proxy carries plain HTTP and CONNECT tunnels for allowed destinations, from EGRESS_SOURCE', privileged(), async (t) => {
  const topo = await proxyTopology(t)
  await startDnsmasq(t, topo, { [NAME]: [v4.dest] })
  const dest = await startDest(t, topo)
  await startProxy(t, topo, `${NAME}\n${v4.dest}\n`)
  const dir = scratchDir(t)
  const base = `http://${NAME}:${dest.port}`
  // Several MB of random bytes: big enough for many TCP windows and for curl's Expect: 100-continue.
  const upload = randomBytes(6 * MiB + 12_345)
  const uploadFile = join(dir, 'upload.bin')
  writeFileSync(uploadFile, upload)

  const responseOf = async (urlPart: string): Promise<Extract<DestEvent, { event: 'response' }>> =>
    await dest.waitFor((e) => e.event === 'response' && e.url.includes(urlPart), `the destination's response to ${urlPart}`)

  for (const tunnel of [false, true]) {
    const how = tunnel ? 'CONNECT tunnel (curl -p -x)' : 'plain HTTP (curl -x)'
    const tag = tunnel ? 'tunnel' : 'plain'

    await t.test(`${how}: GET by name`, async (t) => {
      const r = await curl(topo, { url: `${base}/${tag}/get`, tunnel })
      t.equal(r.exit, 0, `curl succeeded: ${r.stderr}`)
      t.equal(r.status, 200)
      if (tunnel) t.equal(r.connectStatus, 200, 'the proxy established the tunnel')
      const seen = seenBy(r.body)
      t.equal(seen === null ? r.body : peerHost(seen.peer), v4.source, 'the destination answered that it saw EGRESS_SOURCE')
      const req = await dest.waitFor<Extract<DestEvent, { event: 'request' }>>((e) => e.event === 'request' && e.url === `/${tag}/get`, 'the request at the destination')
      t.equal(peerHost(req.peer), v4.source, 'the destination reported the request from EGRESS_SOURCE')
      t.equal(req.local, `${v4.dest}:${dest.port}`, 'on the address the name resolves to')
      t.equal(req.host, `${NAME}:${dest.port}`, 'with the Host of the request URI')
      if (!tunnel) t.match(req.via, /egress-router/, 'the forwarded request carries Via')
    })

    await t.test(`${how}: a ${(upload.length / MiB).toFixed(1)} MB POST body arrives intact`, async (t) => {
      const r = await curl(topo, { url: `${base}/${tag}/upload`, tunnel, args: ['--data-binary', `@${uploadFile}`, '-H', 'Content-Type: application/octet-stream'], timeoutMs: 30_000 })
      t.equal(r.exit, 0, `curl succeeded: ${r.stderr}`)
      t.equal(r.status, 200)
      const got = await dest.waitFor<Extract<DestEvent, { event: 'received' }>>((e) => e.event === 'received' && e.url === `/${tag}/upload`, 'the upload at the destination')
      t.same({ bytes: got.bytes, sha256: got.sha256 }, { bytes: upload.length, sha256: sha256(upload) }, 'the destination received exactly the bytes curl sent')
      t.same(seenBy(r.body)?.received, { bytes: upload.length, sha256: sha256(upload) }, 'and told the client so')
    })

    await t.test(`${how}: a chunked upload arrives intact and still chunked`, async (t) => {
      const r = await curl(topo, { url: `${base}/${tag}/chunked-upload`, tunnel, args: ['--data-binary', `@${uploadFile}`, '-H', 'Transfer-Encoding: chunked'], timeoutMs: 30_000 })
      t.equal(r.exit, 0, `curl succeeded: ${r.stderr}`)
      t.equal(r.status, 200)
      const req = await dest.waitFor<Extract<DestEvent, { event: 'request' }>>((e) => e.event === 'request' && e.url === `/${tag}/chunked-upload`, 'the chunked upload at the destination')
      t.equal(req.te, 'chunked', 'the destination got a chunked body')
      const got = await dest.waitFor<Extract<DestEvent, { event: 'received' }>>((e) => e.event === 'received' && e.url === `/${tag}/chunked-upload`, 'the chunked body at the destination')
      t.same({ bytes: got.bytes, sha256: got.sha256 }, { bytes: upload.length, sha256: sha256(upload) }, 'byte for byte')
    })

    await t.test(`${how}: a chunked response arrives intact and chunked`, async (t) => {
      const url = `/chunked?chunks=300&size=3001&via=${tag}`
      const out = join(dir, `chunked-${tag}.bin`)
      const headers = join(dir, `chunked-${tag}.headers`)
      const r = await curl(topo, { url: `${base}${url}`, tunnel, args: ['-o', out, '-D', headers], timeoutMs: 30_000 })
      t.equal(r.exit, 0, `curl succeeded: ${r.stderr}`)
      t.equal(r.status, 200)
      const sent = await responseOf(url)
      t.ok(sent.complete, 'the destination finished its response')
      const body = readFileSync(out)
      t.same({ bytes: body.length, sha256: sha256(body) }, { bytes: sent.bytes, sha256: sent.sha256 }, 'curl received exactly what the destination sent')
      t.equal(sent.bytes, 300 * 3001)
      t.match(readFileSync(headers, 'latin1'), /^transfer-encoding: chunked\r$/im, 'in chunked encoding')
    })

    await t.test(`${how}: a 16 MB response arrives intact`, async (t) => {
      const url = `/download?bytes=${16 * MiB}&via=${tag}`
      const out = join(dir, `download-${tag}.bin`)
      const r = await curl(topo, { url: `${base}${url}`, tunnel, args: ['-o', out], timeoutMs: 30_000 })
      t.equal(r.exit, 0, `curl succeeded: ${r.stderr}`)
      const sent = await responseOf(url)
      const body = readFileSync(out)
      t.same({ bytes: body.length, sha256: sha256(body) }, { bytes: sent.bytes, sha256: sent.sha256 }, 'curl received exactly what the destination sent')
    })
  }

  await t.test('HTTP/1.0 clients and HEAD requests', async (t) => {
    const url = '/chunked?chunks=50&size=1000&via=http10'
    const out = join(dir, 'http10.bin')
    const old = await curl(topo, { url: `${base}${url}`, args: ['--http1.0', '-o', out] })
    t.equal(old.exit, 0, `curl --http1.0 succeeded: ${old.stderr}`)
    t.equal(old.status, 200)
    const sent = await responseOf(url)
    const body = readFileSync(out)
    t.same({ bytes: body.length, sha256: sha256(body) }, { bytes: sent.bytes, sha256: sent.sha256 }, 'an HTTP/1.0 client gets the chunked response whole (unchunked)')
    const head = await curl(topo, { url: `${base}/download?bytes=5000&via=head`, args: ['-I'] })
    t.equal(head.status, 200, 'HEAD: 200')
    t.match(head.body, /^content-length: 5000\r$/im, 'with the length of the body it did not send')
    const req = await dest.waitFor<Extract<DestEvent, { event: 'request' }>>((e) => e.event === 'request' && e.url.includes('via=head'), 'the HEAD request')
    t.equal(req.method, 'HEAD')
  })

  await t.test('by IP literal too, and every connection the destination saw came from EGRESS_SOURCE', async (t) => {
    const plain = await curl(topo, { url: `http://${v4.dest}:${dest.port}/literal` })
    const tunnel = await curl(topo, { url: `http://${v4.dest}:${dest.port}/literal-tunnel`, tunnel: true })
    t.same([plain.status, tunnel.status], [200, 200], `${plain.stderr}${tunnel.stderr}`)
    const strangers = dest.events.filter((e) => 'peer' in e && peerHost(e.peer) !== v4.source)
    t.same(strangers, [], 'no connection from any other address')
    t.ok(dest.connections() > 0)
  })

  await t.test('from the LAN, port 8080 on EGRESS_SOURCE is unreachable', async (t) => {
    const before = dest.connections()
    // Dropped packets make each probe wait for its deadline: run them side by side.
    const [direct, asProxy, tunnel] = await Promise.all([
      curl(topo, { ns: 'lan', proxy: false, url: `http://${v4.source}:${PROXY_PORT}/`, timeoutMs: 3_000 }),
      curl(topo, { ns: 'lan', proxy: `http://${v4.source}:${PROXY_PORT}`, url: `http://${v4.dest}:${dest.port}/from-lan`, timeoutMs: 3_000 }),
      curl(topo, { ns: 'lan', proxy: `http://${v4.source}:${PROXY_PORT}`, tunnel: true, url: `http://${v4.dest}:${dest.port}/from-lan-tunnel`, timeoutMs: 3_000 })
    ])
    t.not(direct.exit, 0, `curl to ${v4.source}:${PROXY_PORT} from the LAN fails (exit ${String(direct.exit)})`)
    t.equal(direct.status, 0, 'no HTTP answer')
    t.not(asProxy.exit, 0, 'using it as a proxy from the LAN fails')
    t.not(tunnel.exit, 0, 'CONNECT from the LAN fails')
    // The same request from the client side works, so the destination would have seen it.
    const control = await curl(topo, { url: `http://${v4.dest}:${dest.port}/from-client` })
    t.equal(control.status, 200, 'the same request from the pod side is served')
    await dest.waitFor((e) => e.event === 'request' && e.url === '/from-client', 'the control request')
    t.same(dest.requests('/from-lan'), [], 'the destination never saw the LAN requests')
    t.ok(dest.connections() - before <= 1, 'nothing but the control request reached the destination')
  })
})
