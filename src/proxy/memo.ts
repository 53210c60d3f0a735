/**
 * A function's results by their key, bounded: when `size` keys are held the whole table is dropped and
 * filling starts again. The hot paths of the HTTP proxy see the same few keys (hosts, Connection fields,
 * IP-literal targets) request after request; an attacker sending new keys only ever costs the uncached
 * call plus one clear per `size` keys, and memory stays at `size` entries. The results must be immutable
 * (shared). `keyOf` names the key of an argument that is not a string itself (default: the argument).
 */
export function boundedMemo<A, V> (size: number, compute: (arg: A) => V, keyOf: (arg: A) => unknown = (arg) => arg): (arg: A) => V {
  const table = new Map<unknown, V>()
  return (arg: A): V => {
    const key = keyOf(arg)
    let value = table.get(key)
    if (value === undefined) {
      value = compute(arg)
      if (table.size >= size) table.clear()
      table.set(key, value)
    }
    return value
  }
}
