/**
 * `egress-router lab`: build a throw-away namespace topology (client — router — LAN with gateway —
 * destination), run the real router in it, send real traffic from the client with curl, print what the
 * destination saw, and tear it all down (or leave it up with --keep).
 */
import { fileURLToPath } from 'node:url'
import { runOk, run } from './exec.js'
import { startRouter, type RouterProcess } from './router-process.js'
import { buildTopology, LAB, type Topology } from './topology.js'
import { waitFor } from './wait.js'

export type LabMode = 'redirect' | 'http-proxy' | 'dns-proxy'

const WHOAMI = fileURLToPath(new URL('./whoami.js', import.meta.url))
/** the name the lab's dnsmasq answers for the destination */
export const LAB_DEST_NAME = 'dest.lab.example'

function bracket (host: string): string {
  return host.includes(':') ? `[${host}]` : host
}

/** The router's environment for a lab run: what an operator would put in the pod spec. */
export function labEnv (mode: LabMode, ipv6: boolean): Record<string, string> {
  const a = ipv6 ? LAB.v6 : LAB.v4
  const env: Record<string, string> = {
    EGRESS_ROUTER_MODE: mode,
    EGRESS_SOURCE: `${a.source}/${a.prefixLength}`,
    EGRESS_GATEWAY: a.gateway,
    EGRESS_INTERFACE: LAB.links.routerLan,
    EGRESS_POD_INTERFACE: LAB.links.routerPod,
    EGRESS_HEALTH_ADDRESS: ':9090',
    EGRESS_DRAIN_TIMEOUT: '2s'
  }
  if (mode === 'redirect') env.EGRESS_DESTINATION = `# port 80 to the destination, 8080 to its port 80\n80 tcp ${a.dest}\n8080 tcp ${a.dest} 80\n`
  if (mode === 'http-proxy') env.EGRESS_HTTP_PROXY_DESTINATION = `${a.dest}\n*.lab.example\n`
  if (mode === 'dns-proxy') env.EGRESS_DNS_PROXY_DESTINATION = `8000 ${LAB_DEST_NAME} 80\n8001 ${a.dest} 80\n`
  return env
}

/** The client's requests for a mode: curl invocations, each with what it demonstrates. */
function clientRequests (mode: LabMode, ipv6: boolean): Array<{ what: string, argv: string[] }> {
  const a = ipv6 ? LAB.v6 : LAB.v4
  const router = bracket(a.routerPod)
  const curl = ['curl', '-sS', '--max-time', '5']
  switch (mode) {
    case 'redirect':
      return [
        { what: `tcp ${router}:80 → ${bracket(a.dest)}:80`, argv: [...curl, `http://${router}:80/`] },
        { what: `tcp ${router}:8080 → ${bracket(a.dest)}:80 (port rewrite)`, argv: [...curl, `http://${router}:8080/`] }
      ]
    case 'http-proxy':
      return [
        { what: `GET http://${LAB_DEST_NAME}/ through the proxy`, argv: [...curl, '-x', `http://${router}:8080`, `http://${LAB_DEST_NAME}/`] },
        { what: `CONNECT ${bracket(a.dest)}:80 tunnel through the proxy`, argv: [...curl, '-p', '-x', `http://${router}:8080`, `http://${bracket(a.dest)}/`] }
      ]
    case 'dns-proxy':
      return [
        { what: `tcp ${router}:8000 → ${LAB_DEST_NAME}:80 (resolved by the router)`, argv: [...curl, `http://${router}:8000/`] },
        { what: `tcp ${router}:8001 → ${bracket(a.dest)}:80`, argv: [...curl, `http://${router}:8001/`] }
      ]
  }
}

/** dnsmasq in the LAN namespace, answering for the lab names only (never forwarding anywhere). */
function startDnsmasq (topo: Topology, ipv6: boolean): void {
  const a = ipv6 ? LAB.v6 : LAB.v4
  topo.spawn('lan', ['dnsmasq', '--keep-in-foreground', '--no-resolv', '--no-hosts', '--no-poll', '--bind-interfaces',
    `--listen-address=${a.gateway}`, '--port=53', `--host-record=${LAB_DEST_NAME},${a.dest}`, '--local-ttl=5', '--pid-file=',
    '--user=root', '--log-facility=-'], { stdio: ['ignore', 'ignore', 'ignore'] })
}

export interface LabReport {
  ok: boolean
  lines: string[]
}

export async function runLab (opts: { mode: LabMode, ipv6: boolean, keep: boolean, out?: (line: string) => void }): Promise<LabReport> {
  const out = opts.out ?? ((l: string) => { process.stdout.write(l + '\n') })
  const a = opts.ipv6 ? LAB.v6 : LAB.v4
  const lines: string[] = []
  const say = (l: string): void => { lines.push(l); out(l) }
  const needsDns = opts.mode !== 'redirect'
  let topo: Topology | null = null
  let router: RouterProcess | null = null
  let ok = true
  try {
    topo = await buildTopology({ prefix: 'erlab-', ipv6: opts.ipv6, dnsResolvConf: needsDns ? `nameserver ${a.gateway}\noptions timeout:1 attempts:2\n` : undefined })
    const t = topo
    say(`lab: namespaces ${Object.values(t.ns).join(', ')}`)
    say(`lab: client ${a.client} → router ${a.routerPod} | macvlan ${a.source} on ${LAB.links.routerLan} → gateway ${a.gateway} → destination ${a.dest}`)
    if (needsDns) startDnsmasq(t, opts.ipv6)
    const whoami = t.spawn('dest', [process.execPath, WHOAMI, '80'], { stdio: ['ignore', 'pipe', 'ignore'] })
    const seen: Array<{ peer: string, port: number }> = []
    let listening = false
    whoami.stdout?.setEncoding('utf8').on('data', (chunk: string) => {
      for (const line of chunk.split('\n')) {
        if (line.trim() === '') continue
        try {
          const e = JSON.parse(line) as { event: string, peer: string, port: number }
          if (e.event === 'listening') listening = true
          if (e.event === 'request') seen.push(e)
        } catch { /* not ours */ }
      }
    })
    await waitFor(() => listening, { what: 'the destination server to listen', timeoutMs: 10_000 })

    const env = labEnv(opts.mode, opts.ipv6)
    say(`lab: starting egress-router (${opts.mode}) in ${t.ns.router} with:`)
    for (const [k, v] of Object.entries(env)) say(`       ${k}=${JSON.stringify(v)}`)
    const started = Date.now()
    router = startRouter(t, env)
    await router.waitReady(30_000)
    const rules = router.logs.find((l) => l.event === 'rules')
    say(`lab: router ready after ${Date.now() - started} ms (rules in place ${String(rules?.setupMs ?? '?')} ms after its start)`)

    for (const req of clientRequests(opts.mode, opts.ipv6)) {
      const before = seen.length
      const r = await run(req.argv, { netns: t.ns.client, timeoutMs: 10_000 })
      const answer = r.stdout.trim() || r.stderr.trim()
      const saw = await waitFor(() => seen.length > before ? seen[before] : undefined, { what: 'the destination to see the request', timeoutMs: 3_000 }).catch(() => null)
      const good = r.code === 0 && saw !== null && saw.peer === a.source
      ok &&= good
      say(`${good ? 'ok  ' : 'FAIL'} ${req.what}`)
      say(`       client got: ${answer}`)
      say(`       destination saw: ${saw === null ? 'nothing' : `a connection from ${saw.peer}`}${saw !== null && saw.peer === a.source ? ' = EGRESS_SOURCE' : ''}`)
    }
    const lanProbe = await run(['curl', '-sS', '--max-time', '2', `http://${bracket(a.source)}:${opts.mode === 'http-proxy' ? 8080 : 80}/`], { netns: t.ns.lan, timeoutMs: 5_000 })
    const closed = lanProbe.code !== 0
    ok &&= closed
    say(`${closed ? 'ok  ' : 'FAIL'} from the LAN, ${a.source} is closed to new connections (curl: ${closed ? 'no answer' : 'answered!'})`)

    if (opts.keep) {
      say('')
      say('lab: left running (--keep). Explore, for example:')
      say(`  ip netns exec ${t.ns.client} curl -s http://${bracket(a.routerPod)}:${opts.mode === 'dns-proxy' ? 8000 : opts.mode === 'http-proxy' ? '8080 …' : 80}/`)
      say(`  ip netns exec ${t.ns.router} nft list table ${opts.ipv6 ? 'ip6' : 'ip'} egress_router`)
      say(`  ip netns exec ${t.ns.router} curl -s http://127.0.0.1:9090/readyz ; … /metrics`)
      say(`  ip -n ${t.ns.router} addr show ${'macvlan0'} ; ip -n ${t.ns.router} route`)
      // The processes first (the router, the destination's whoami server): deleting a namespace does not end them.
      say(`tear down: for n in ${Object.values(t.ns).join(' ')}; do ip netns pids $n | xargs -r kill; ip netns del $n; done`)
      t.keep()
      router.child.unref()
      router = null
      topo = null
    }
  } catch (err) {
    ok = false
    say(`lab: FAILED: ${err instanceof Error ? err.message : String(err)}`)
    if (router !== null) for (const l of router.logs.slice(-5)) say(`       router log: ${JSON.stringify(l)}`)
  } finally {
    if (router !== null) {
      const { code } = await router.stop('SIGTERM', 10_000)
      say(`lab: router stopped (exit ${String(code)})`)
    }
    if (topo !== null) {
      await topo.destroy()
      say('lab: torn down')
    }
  }
  say(ok ? 'lab: PASS — the destination saw EGRESS_SOURCE' : 'lab: FAIL')
  return { ok, lines }
}

export async function labCommand (opts: { mode: LabMode, keep: boolean, ipv6: boolean }): Promise<number> {
  if (typeof process.getuid === 'function' && process.getuid() !== 0) {
    process.stderr.write('egress-router lab: needs root (it creates network namespaces)\n')
    return 1
  }
  try {
    await runOk(['ip', 'netns', 'list'], { timeoutMs: 5_000 })
  } catch {
    process.stderr.write('egress-router lab: needs iproute2 (`ip`); run scripts/bootstrap first\n')
    return 1
  }
  const report = await runLab(opts)
  return report.ok ? 0 : 1
}
