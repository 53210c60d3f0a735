// Types for the undici files src/proxy/undici-core.ts loads by path: each file's module.exports is the class or
// function undici's index re-exports under that name.
declare module 'undici/lib/dispatcher/agent.js' {
  import type { Agent } from 'undici'
  const exported: typeof Agent
  export default exported
}
declare module 'undici/lib/dispatcher/pool.js' {
  import type { Pool } from 'undici'
  const exported: typeof Pool
  export default exported
}
declare module 'undici/lib/dispatcher/client.js' {
  import type { Client } from 'undici'
  const exported: typeof Client
  export default exported
}
declare module 'undici/lib/core/connect.js' {
  import type { buildConnector } from 'undici'
  const exported: typeof buildConnector
  export default exported
}
