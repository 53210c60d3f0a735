import t from 'tap'
import { parseGeneration } from '../../../src/nft/generation.js'

const NEWGEN = (10 << 8) | 15

t.test('the generation is the NFTA_GEN_ID of the NEWGEN answer', async t => {
  // what a Linux 6.x kernel answered (nfgenmsg, then NFTA_GEN_ID, NFTA_GEN_PROC_PID, NFTA_GEN_PROC_NAME "node")
  const answer = Buffer.from('0000000208000100000000020800020000006e74090003006e6f646500000000', 'hex')
  t.equal(parseGeneration([{ type: NEWGEN, data: answer }]), 2)
  const big = Buffer.from('00000000' + '08000100' + 'fffffffe', 'hex')
  t.equal(parseGeneration([{ type: NEWGEN, data: big }]), 4294967294, 'a big-endian u32, not a signed one')
  // the attribute after others, with the nested/byte-order flag bits set on its type
  const later = Buffer.from('00000000' + '0600030061620000' + '08000180' + '00000007', 'hex')
  t.equal(parseGeneration([{ type: NEWGEN, data: later }]), 7, 'found after a padded attribute, flag bits ignored')
})

t.test('no generation without a NEWGEN message carrying one', async t => {
  t.equal(parseGeneration([]), null)
  t.equal(parseGeneration([{ type: 2, data: Buffer.alloc(20) }]), null, 'an error/ack message')
  t.equal(parseGeneration([{ type: NEWGEN, data: Buffer.from('00000000', 'hex') }]), null, 'no attributes')
  t.equal(parseGeneration([{ type: NEWGEN, data: Buffer.from('00000000' + '0800020000000001', 'hex') }]), null, 'only another attribute')
  t.equal(parseGeneration([{ type: NEWGEN, data: Buffer.from('00000000' + '20000100000000', 'hex') }]), null, 'a length past the end')
  t.equal(parseGeneration([{ type: NEWGEN, data: Buffer.from('00000000' + '0200010000000000', 'hex') }]), null, 'a length under the header')
})
