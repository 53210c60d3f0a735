/**
 * `egress-router cleanup`: remove everything this daemon may have created — our nft table (only if it carries
 * our comment), policy rules at our priorities, routes in our table, the macvlan if we created it (our alias
 * marker). Needs no valid configuration beyond the link name; idempotent.
 */
import { cleanupNetwork } from '../apply/network.js'
import { NetlinkHandle } from '../netlink/handle.js'
import { createNftRunner } from '../nft/runner.js'
import { OWNER_COMMENT } from '../plan/ruleset.js'
import { ROUTE_TABLE, RULE_PRIORITY_FROM, RULE_PRIORITY_MARK, NFT_TABLE } from '../plan/marks.js'
import { createLogger, type LogFormat } from '../observe/log.js'

export async function cleanupCommand (env: Record<string, string | undefined>, flags: Record<string, string | undefined>, opts: { logFormat?: LogFormat }): Promise<number> {
  const logger = createLogger({ level: 'info', format: opts.logFormat })
  const linkName = flags.EGRESS_MACVLAN_NAME ?? env.EGRESS_MACVLAN_NAME ?? 'macvlan0'
  const nft = createNftRunner()
  const removed: string[] = []
  let failed = false
  for (const family of ['ip', 'ip6'] as const) {
    try {
      const comment = await nft.tableComment(family, NFT_TABLE)
      if (comment === null) continue
      if (comment !== OWNER_COMMENT) {
        logger.warn({ table: `${family} ${NFT_TABLE}` }, `nft table ${family} ${NFT_TABLE} does not carry our comment; left alone`)
        continue
      }
      await nft.deleteTable(family, NFT_TABLE)
      removed.push(`nft table ${family} ${NFT_TABLE}`)
    } catch (err) {
      failed = true
      logger.error({ err }, `could not delete nft table ${family} ${NFT_TABLE}`)
    }
  }
  const nl = NetlinkHandle.open()
  try {
    removed.push(...await cleanupNetwork({ linkName, tables: [ROUTE_TABLE], rulePriorities: [RULE_PRIORITY_FROM, RULE_PRIORITY_MARK], families: [4, 6] }, nl))
  } catch (err) {
    failed = true
    logger.error({ err }, 'could not remove the network changes')
  } finally {
    nl.close()
  }
  logger.info({ event: 'cleanup', removed }, removed.length === 0 ? 'nothing to clean up' : `removed: ${removed.join(', ')}`)
  return failed ? 1 : 0
}
