/**
 * deploy/*.yaml, checked as Kubernetes would read them and against the daemon itself: every document
 * parses and names itself; every env var is one egress-router reads; each container's configuration
 * (env + the mounted ConfigMap) loads as a valid Config; probes hit the health port; ConfigMap keys are
 * exactly the files the `_FILE` variables name; and an unprivileged container finds every sysctl its
 * plan writes already set (by the CNI tuning plugin, or by the privileged init container).
 */
import t from 'tap'
import { readdirSync, readFileSync } from 'node:fs'
import { dirname, join, posix, resolve } from 'node:path'
import { fileURLToPath } from 'node:url'
import { parseAllDocuments } from 'yaml'
import { loadConfig } from '../../../src/cli.js'
import { parseDuration } from '../../../src/config/duration.js'
import { VARIABLES } from '../../../src/config/env.js'
import type { Config } from '../../../src/config/types.js'
import { planNetwork } from '../../../src/plan/network.js'

const ROOT = resolve(dirname(fileURLToPath(import.meta.url)), '../../..')
const DEPLOY = join(ROOT, 'deploy')
const KNOWN = new Set(VARIABLES.map((v) => v.name))

/* eslint-disable @typescript-eslint/no-explicit-any */
type Doc = Record<string, any>
interface Env { name: string, value?: string }
interface Container { name: string, env?: Env[], ports?: Array<{ name?: string, containerPort: number }>, securityContext?: Doc, livenessProbe?: Doc, readinessProbe?: Doc, volumeMounts?: Array<{ name: string, mountPath: string }> }

const files = readdirSync(DEPLOY).filter((f) => f.endsWith('.yaml')).sort()
const docs: Array<{ file: string, doc: Doc }> = []
for (const file of files) {
  for (const d of parseAllDocuments(readFileSync(join(DEPLOY, file), 'utf8'))) {
    docs.push({ file, doc: d.toJS() as Doc })
  }
}
const byKind = (kind: string): Array<{ file: string, doc: Doc }> => docs.filter((d) => d.doc?.kind === kind)
const nads = new Map(byKind('NetworkAttachmentDefinition').map(({ doc }) => [doc.metadata.name as string, JSON.parse(doc.spec.config) as Doc]))

t.test('the files are there', async t => {
  t.same(files, ['dns-proxy.yaml', 'http-proxy.yaml', 'init-container.yaml', 'network-attachment.yaml', 'redirect.yaml'])
})

t.test('every document parses and names itself', async t => {
  for (const file of files) {
    for (const d of parseAllDocuments(readFileSync(join(DEPLOY, file), 'utf8'))) {
      t.same(d.errors.map(String), [], `${file}: no YAML errors`)
      t.same(d.warnings.map(String), [], `${file}: no YAML warnings`)
    }
  }
  for (const { file, doc } of docs) {
    t.type(doc.apiVersion, 'string', `${file}: apiVersion`)
    t.type(doc.kind, 'string', `${file}: kind`)
    t.match(doc.metadata?.name, /^[a-z0-9]([-a-z0-9]*[a-z0-9])?$/, `${file}: metadata.name is a DNS label`)
  }
})

t.test('examples use documentation addresses only', async t => {
  for (const file of files) {
    const text = readFileSync(join(DEPLOY, file), 'utf8')
    for (const ip of text.match(/\b\d{1,3}(\.\d{1,3}){3}\b/g) ?? []) {
      t.match(ip, /^(192\.0\.2|198\.51\.100|203\.0\.113)\./, `${file}: ${ip}`)
    }
  }
  // host names in configurations and images: example.com only
  const values = docs.flatMap(({ doc }) => [
    ...Object.values((doc.kind === 'ConfigMap' ? doc.data : {}) as Record<string, string>),
    ...((doc.spec?.template?.spec?.containers ?? []) as Doc[]).map((c) => c.image as string),
    ...((doc.spec?.template?.spec?.initContainers ?? []) as Doc[]).map((c) => c.image as string)
  ])
  t.ok(values.length > 0)
  for (const host of values.join('\n').match(/\b[a-z0-9-]+(\.[a-z0-9-]+)+\b/gi) ?? []) {
    if (/^[\d.]+$/.test(host)) continue
    t.match(host, /(^|\.)example\.com$/, host)
  }
})

t.test('NetworkAttachmentDefinitions are macvlan CNI configurations', async t => {
  t.ok(nads.size >= 2)
  for (const [name, config] of nads) {
    t.equal(config.name, name)
    const plugins: Doc[] = config.plugins ?? [config]
    const macvlan = plugins.find((p) => p.type === 'macvlan')
    t.ok(macvlan !== undefined, `${name}: a macvlan plugin`)
    t.same(macvlan?.ipam, {}, `${name}: no IPAM — the router adds EGRESS_SOURCE itself`)
  }
})

const deployments = byKind('Deployment')

t.test('deployments', async t => {
  t.equal(deployments.length, 4)
  for (const { file, doc } of deployments) {
    t.test(`${file} ${doc.metadata.name as string}`, async t => {
      const spec = doc.spec
      const pod = spec.template.spec
      t.equal(spec.replicas, 1)
      t.equal(spec.strategy?.type, 'Recreate', 'two routers with one source IP must never overlap')
      for (const [k, v] of Object.entries(spec.selector.matchLabels as Record<string, string>)) {
        t.equal(spec.template.metadata.labels[k], v, `selector ${k} matches the pod`)
      }
      const drain = parseDuration(VARIABLES.find((v) => v.name === 'EGRESS_DRAIN_TIMEOUT')?.default ?? '')
      t.ok(drain.ok && pod.terminationGracePeriodSeconds * 1000 > drain.value, 'grace period above the drain')

      const network = spec.template.metadata.annotations?.['k8s.v1.cni.cncf.io/networks'] as string
      const nad = nads.get(network)
      t.ok(nad !== undefined, `attachment ${network} is defined in network-attachment.yaml`)
      const tuning: Record<string, string> = ((nad?.plugins ?? []) as Doc[]).find((p) => p.type === 'tuning')?.sysctl ?? {}

      const configMaps = new Map(docs.filter((d) => d.file === file && d.doc.kind === 'ConfigMap').map(({ doc }) => [doc.metadata.name as string, doc.data as Record<string, string>]))
      const volumes = new Map((pod.volumes as Doc[]).map((v) => [v.name as string, v]))
      const usedKeys = new Set<string>()
      const initContainers = (pod.initContainers ?? []) as Container[]
      const containers = pod.containers as Container[]
      t.equal(containers.length, 1)
      const plans = new Map<string, { config: Config, privileged: boolean }>()

      for (const c of [...initContainers, ...containers]) {
        const isInit = initContainers.includes(c)
        const env: Record<string, string> = {}
        for (const e of c.env ?? []) {
          t.ok(KNOWN.has(e.name), `${c.name}: ${e.name} is a variable egress-router reads`)
          t.type(e.value, 'string', `${c.name}: ${e.name} has a literal value`)
          env[e.name] = e.value ?? ''
        }
        t.equal(env.EGRESS_MACVLAN_NAME, 'net1', `${c.name}: adopts the attachment's interface`)

        // `_FILE` paths: in a mounted ConfigMap of this file, under the key named like the file.
        const readFile = (path: string): string => {
          const mount = (c.volumeMounts ?? []).find((m) => path.startsWith(`${m.mountPath}/`))
          if (mount === undefined) throw new Error(`${path} is not under a volumeMount`)
          const cmName = volumes.get(mount.name)?.configMap?.name as string | undefined
          const data = cmName === undefined ? undefined : configMaps.get(cmName)
          if (data === undefined) throw new Error(`${mount.name} is not a ConfigMap of ${file}`)
          const key = posix.relative(mount.mountPath, path)
          if (!(key in data)) throw new Error(`ConfigMap ${cmName as string} has no key ${key}`)
          usedKeys.add(`${cmName as string}/${key}`)
          return data[key] as string
        }
        const fileVars = Object.keys(env).filter((n) => n.endsWith('_FILE'))
        t.ok(fileVars.length >= 1, `${c.name}: configured through a mounted ConfigMap`)
        const loaded = loadConfig(env, {}, readFile)
        t.same('issues' in loaded ? loaded.issues : [], [], `${c.name}: env + ConfigMap are a valid configuration`)
        if (!('config' in loaded)) continue
        const config = loaded.config
        t.equal(config.routing, 'pod', `${c.name}: the pod's own network namespace`)

        const sc = c.securityContext ?? {}
        plans.set(c.name, { config, privileged: sc.privileged === true })
        if (isInit) {
          t.equal(config.mode, 'init')
          t.equal(sc.privileged, true, 'the init container writes /proc/sys')
          continue
        }
        t.not(config.mode, 'init')
        t.equal(sc.privileged, false, 'the main container is not privileged')
        t.equal(sc.allowPrivilegeEscalation, false)
        t.equal(sc.readOnlyRootFilesystem, true)
        t.same(sc.capabilities?.drop, ['ALL'])
        const lowPorts = config.mode === 'dns-proxy'
          ? (config.dnsProxy?.forwards ?? []).some((f: { port: number }) => f.port < 1024)
          : config.mode === 'http-proxy' && config.httpProxy !== null && config.httpProxy.port < 1024
        t.same([...(sc.capabilities?.add ?? [])].sort(), lowPorts ? ['NET_ADMIN', 'NET_BIND_SERVICE'] : ['NET_ADMIN'],
          'NET_ADMIN, and NET_BIND_SERVICE only for a port below 1024')

        // probes on the health listener
        t.ok(config.health !== null, 'health listener on')
        const portOf = (p: string | number): number | undefined =>
          typeof p === 'number' ? p : c.ports?.find((x) => x.name === p)?.containerPort
        t.equal(c.livenessProbe?.httpGet?.path, '/healthz')
        t.equal(c.readinessProbe?.httpGet?.path, '/readyz')
        t.equal(portOf(c.livenessProbe?.httpGet?.port), config.health?.port, 'liveness on the health port')
        t.equal(portOf(c.readinessProbe?.httpGet?.port), config.health?.port, 'readiness on the health port')

        // every sysctl the plan writes is already set before this unprivileged container starts
        const plan = planNetwork(config, { parent: null, macvlanExists: true, podAddresses: [{ address: '198.51.100.10', family: 4 }] })
        t.equal(plan.link.action, 'adopt')
        const before = new Map<string, string>()
        for (const [key, value] of Object.entries(tuning)) before.set(key.replaceAll('IFNAME', 'net1').replaceAll('.', '/'), value)
        for (const init of initContainers) {
          const p = plans.get(init.name)
          if (p?.privileged !== true) continue
          for (const s of planNetwork(p.config, { parent: null, macvlanExists: true, podAddresses: [] }).sysctls) before.set(s.path, s.value)
        }
        for (const s of plan.sysctls) {
          t.equal(before.get(s.path), s.value, `${s.path}=${s.value} is set before the main container (read-only /proc/sys)`)
        }
      }

      for (const [name, data] of configMaps) {
        for (const key of Object.keys(data)) t.ok(usedKeys.has(`${name}/${key}`), `ConfigMap ${name} key ${key} is read through a _FILE variable`)
      }
      for (const v of volumes.values()) {
        if (v.configMap !== undefined) t.ok(configMaps.has(v.configMap.name), `volume ${v.name as string}: ConfigMap ${v.configMap.name as string} is in ${file}`)
      }

      // the Service of this file selects these pods and targets ports the container declares
      const services = docs.filter((d) => d.file === file && d.doc.kind === 'Service')
      t.equal(services.length, 1)
      const svc = services[0]?.doc as Doc
      for (const [k, v] of Object.entries(svc.spec.selector as Record<string, string>)) {
        t.equal(spec.template.metadata.labels[k], v, `Service selects the pod by ${k}`)
      }
      const main = containers[0] as Container
      for (const p of svc.spec.ports as Doc[]) {
        const target = p.targetPort ?? p.port
        if (typeof target === 'string') t.ok(main.ports?.some((x) => x.name === target), `Service port ${p.name as string} targets a named container port`)
        else t.ok(target >= 1 && target <= 65535)
      }
      t.ok((svc.spec.ports as Doc[]).some((p) => p.targetPort === 'health' && p.name === 'metrics'), '/metrics reachable through the Service')
    })
  }
})

t.test('each mode has its manifest', async t => {
  const modes = deployments.map(({ doc }) => {
    const env = (doc.spec.template.spec.containers[0].env as Env[])
    return env.find((e) => e.name === 'EGRESS_ROUTER_MODE')?.value
  }).sort()
  t.same(modes, ['dns-proxy', 'http-proxy', 'redirect', 'redirect'])
})
