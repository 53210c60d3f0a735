/**
 * A function's results by their key text, bounded: when `size` keys are held the whole table is dropped
 * and filling starts again. The hot paths of the HTTP proxy see the same few keys (hosts, Connection
 * fields) request after request; an attacker sending new keys only ever costs the uncached call plus one
 * clear per `size` keys, and memory stays at `size` entries. The results must be immutable (shared).
 */
export function boundedMemo<V> (size: number, compute: (key: string) => V): (key: string) => V {
  const table = new Map<string, V>()
  return (key: string): V => {
    let value = table.get(key)
    if (value === undefined) {
      value = compute(key)
      if (table.size >= size) table.clear()
      table.set(key, value)
    }
    return value
  }
}
