/**
 * The four pieces of undici the HTTP proxy uses (Agent, Pool, Client, buildConnector), loaded from their own
 * files instead of undici's index. The index also loads fetch, WebSocket, EventSource, the mock and snapshot
 * agents, the interceptors and the cache stores, none of which a proxy calls. Measured with require() in a
 * bare node 20: 39.5 MiB RSS bare, 59.8 with undici's index, 50.9 with these four files.
 *
 * undici's package.json has no `exports` map, so its files can be loaded by path. The paths are those of the
 * exact version in package.json; a newer undici that moves them fails every plain-HTTP test (test/netns).
 */
import type { Agent, Client, Pool, buildConnector } from 'undici'

export interface UndiciCore {
  readonly Agent: typeof Agent
  readonly Pool: typeof Pool
  readonly Client: typeof Client
  readonly buildConnector: typeof buildConnector
}

/** Loads them (once: the module loader caches). A CommonJS module's exports are its `default`, under Node's loader and in the bundle alike. */
export async function loadUndiciCore (): Promise<UndiciCore> {
  const [agent, pool, client, connect] = await Promise.all([
    import('undici/lib/dispatcher/agent.js'),
    import('undici/lib/dispatcher/pool.js'),
    import('undici/lib/dispatcher/client.js'),
    import('undici/lib/core/connect.js')
  ])
  return { Agent: agent.default, Pool: pool.default, Client: client.default, buildConnector: connect.default }
}
