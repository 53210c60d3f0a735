/**
 * The nf_tables ruleset generation: a counter the kernel steps on every committed transaction in the namespace
 * (NFT_MSG_GETGEN over a netfilter netlink socket, what `nft list ruleset` asks first). Equal generations mean an
 * unchanged ruleset, so the reconciler's safety net compares this number every interval and lists our table (a
 * fork of `nft -j`) only when it moved. A request and its answer on a socket kept open, no child process.
 */
import type { NetlinkMessage, NetlinkSocket } from 'netlink'
import { NETLINK_NETFILTER } from '../netlink/events.js'
import { netlinkLibrary } from '../netlink/library.js'
/** linux/netfilter/nfnetlink.h: the nf_tables subsystem, in the message type's high byte */
const NFNL_SUBSYS_NFTABLES = 10
/** linux/netfilter/nf_tables.h */
const NFT_MSG_GETGEN = 16
const NFT_MSG_NEWGEN = 15
const NFTA_GEN_ID = 1
/** struct nfgenmsg: family AF_UNSPEC, version NFNETLINK_V0, res_id 0 */
const NFGENMSG = Buffer.from([0, 0, 0, 0])

/** The generation in an NFT_MSG_NEWGEN answer (its NFTA_GEN_ID, a big-endian u32), or null when there is none. */
export function parseGeneration (messages: ReadonlyArray<Pick<NetlinkMessage, 'type' | 'data'>>): number | null {
  for (const m of messages) {
    if (m.type !== ((NFNL_SUBSYS_NFTABLES << 8) | NFT_MSG_NEWGEN)) continue
    // after the 4-byte nfgenmsg: netlink attributes, each u16 length (header included), u16 type, padded to 4
    let at = 4
    while (at + 4 <= m.data.length) {
      const len = m.data.readUInt16LE(at)
      const type = m.data.readUInt16LE(at + 2) & 0x3fff
      if (len < 4 || at + len > m.data.length) break
      if (type === NFTA_GEN_ID && len >= 8) return m.data.readUInt32BE(at + 4)
      at += (len + 3) & ~3
    }
  }
  return null
}

export interface GenerationReader {
  /** the namespace's ruleset generation now; rejects if the kernel does not answer within timeoutMs */
  read (): Promise<number>
  close (): void
}

/** A netfilter netlink socket in the process's network namespace, kept open for the reads. */
export async function openGenerationReader (timeoutMs = 2_000): Promise<GenerationReader> {
  const { createNetlink } = netlinkLibrary()
  const socket: NetlinkSocket = createNetlink(NETLINK_NETFILTER)
  // a read in flight holds the process open; an idle socket does not
  socket.ref(false)
  return {
    async read (): Promise<number> {
      const [messages] = await socket.request((NFNL_SUBSYS_NFTABLES << 8) | NFT_MSG_GETGEN, [NFGENMSG], { timeout: timeoutMs })
      const gen = parseGeneration(messages)
      if (gen === null) throw new Error('nft generation: the kernel\'s answer has no NFTA_GEN_ID')
      return gen
    },
    close () { socket.close() }
  }
}
