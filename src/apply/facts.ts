/**
 * The host facts planning needs, read over rtnetlink (reads only: `plan` uses this too).
 */
import type { Config, IpAddress } from '../config/types.js'
import { randomMac } from '../netlink/mac.js'
import type { Rtnl } from '../netlink/types.js'
import type { HostFacts } from '../plan/types.js'
import { OWNER_ALIAS } from './network.js'

export async function gatherFacts (config: Config, nl: Rtnl): Promise<HostFacts> {
  const family = config.source.family
  let existing = await nl.linkByName(config.macvlan.name)
  let parent = config.interface
  // A macvlan carrying our alias is one this daemon created in an earlier run (a restart, or a crash): it is
  // ours, not adopted — planned as a create (which finds it), so stop and cleanup remove it like a fresh one.
  if (existing !== null && existing.kind === 'macvlan' && existing.alias === OWNER_ALIAS && existing.parentIndex !== null) {
    const ownParent = await nl.linkByIndex(existing.parentIndex)
    if (ownParent !== null && (parent === null || parent === ownParent.name)) {
      parent = ownParent.name
      existing = null
    }
  }
  if (parent === null && existing === null) {
    parent = (await nl.defaultRouteLink(family))?.name ?? null
    // a pod whose default route already moved to our macvlan (a restart): the parent is the macvlan's parent
    if (parent === config.macvlan.name) parent = null
  }
  const pod = await nl.linkByName(config.podInterface)
  const podAddresses: IpAddress[] = []
  if (pod !== null) {
    for (const a of await nl.listAddresses(family)) {
      if (a.index !== pod.index) continue
      // link-local IPv6 needs a scope id to bind; clients come in on global addresses
      if (family === 6 && a.address.toLowerCase().startsWith('fe80:')) continue
      podAddresses.push({ address: a.address, family })
    }
  }
  return {
    parent,
    macvlanExists: existing !== null,
    randomMac: config.macvlan.mac.kind === 'random' ? randomMac() : undefined,
    podAddresses
  }
}
