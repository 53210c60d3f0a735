/**
 * The L2 trap: many platforms silently drop frames from a second MAC (hypervisor MAC filtering, OpenStack port
 * security, vSphere forged transmits, AWS). We ask the kernel to resolve the gateway on the macvlan (NTF_USE, no
 * user traffic) and watch the neighbour state: until it answers, readiness stays false, and once the first
 * deadline passes the log says so in one line with the likely causes.
 */
import type { Logger } from 'pino'
import type { Rtnl } from '../netlink/types.js'
import type { Readiness } from '../observe/health.js'
import type { Plan } from '../plan/types.js'

const ANSWERED = new Set(['reachable', 'stale', 'delay', 'probe', 'permanent', 'noarp'])
/** the first look at the neighbour entry; each next one waits twice as long, up to PROBE_EVERY_MS */
const FIRST_CHECK_MS = 10
const PROBE_EVERY_MS = 500
/** how often the kernel is asked to resolve again while there is no answer */
const ASK_EVERY_MS = 2000
const WARN_AFTER_MS = 5000
const RETRY_EVERY_MS = 10_000

/**
 * When to look at the gateway's neighbour entry next. An answer on a LAN takes well under a millisecond,
 * so the first looks come fast (readiness should not wait a fixed half second for it) and back off to
 * PROBE_EVERY_MS; once answered, a look every RETRY_EVERY_MS keeps the readiness check honest.
 */
export function nextCheckInMs (checksSoFar: number, answered: boolean): number {
  if (answered) return RETRY_EVERY_MS
  return Math.min(PROBE_EVERY_MS, FIRST_CHECK_MS * 2 ** Math.min(checksSoFar, 16))
}

export function watchGateway (opts: { nl: Rtnl, plan: Plan, logger: Logger, readiness: Readiness }): () => void {
  const { nl, plan, logger, readiness } = opts
  const gw = plan.network.gateway.address
  const linkName = plan.network.link.name
  const started = Date.now()
  let warned = false
  let answered = false
  let lastAsk = 0
  let timer: NodeJS.Timeout | null = null
  let stopped = false
  let checks = 0
  readiness.set('gateway', false, `resolving ${gw} on ${linkName}`)

  const check = async (): Promise<void> => {
    const link = await nl.linkByName(linkName)
    if (link === null) return
    const n = await nl.getNeighbour(link.index, gw)
    const ok = n !== null && n.state.some((s) => ANSWERED.has(s)) && n.lladdr !== null
    if (ok) {
      if (!answered) logger.info({ event: 'gateway', gateway: gw, mac: n?.lladdr, afterMs: Date.now() - started }, `gateway ${gw} answered on ${linkName}`)
      answered = true
      readiness.set('gateway', true, `${gw} is at ${n?.lladdr ?? '?'}`)
      return
    }
    const waited = Date.now() - started
    if (!warned && waited >= WARN_AFTER_MS) {
      warned = true
      logger.error({ event: 'l2-trap', gateway: gw, link: linkName, neighbour: n?.state ?? null },
        `gateway ${gw} does not answer ARP/ND on ${linkName}: frames from the macvlan's MAC are probably dropped — check hypervisor MAC filtering, OpenStack port security / allowed-address-pairs, vSphere forged transmits / MAC changes, or cloud (AWS) source/dest checks; also that EGRESS_GATEWAY is on that network`)
      readiness.set('gateway', false, `${gw} does not answer on ${linkName} (see the log for the likely causes)`)
    }
    if (Date.now() - lastAsk >= (answered ? RETRY_EVERY_MS : ASK_EVERY_MS)) {
      lastAsk = Date.now()
      await nl.resolveNeighbour(link.index, gw)
    }
  }

  const loop = (): void => {
    if (stopped) return
    check().catch((err: unknown) => logger.debug({ err }, 'gateway neighbour check failed'))
      .finally(() => {
        if (stopped) return
        timer = setTimeout(loop, nextCheckInMs(checks++, answered))
        timer.unref()
      })
  }
  loop()
  return () => { stopped = true; if (timer !== null) clearTimeout(timer) }
}
