/**
 * JSON lines on stdout (pino). `pretty` (a terminal, or --log-format pretty) uses pino-pretty when it is
 * installed (an optional dependency) and falls back to JSON when it is not.
 */
import { createRequire } from 'node:module'
import { pino, type DestinationStream, type Logger } from 'pino'
import type { LogLevel } from '../config/types.js'

export type LogFormat = 'json' | 'pretty'

export function createLogger (opts: { level: LogLevel, format?: LogFormat, destination?: DestinationStream }): Logger {
  const base = { name: 'egress-router' }
  if (opts.destination !== undefined) return pino({ level: opts.level, base }, opts.destination)
  const format = opts.format ?? (process.stdout.isTTY === true ? 'pretty' : 'json')
  if (format === 'pretty') {
    try {
      const require = createRequire(import.meta.url)
      const pretty = require('pino-pretty') as (o: object) => DestinationStream
      return pino({ level: opts.level, base }, pretty({ colorize: process.stdout.isTTY === true, translateTime: 'SYS:HH:MM:ss.l', ignore: 'pid,hostname,name' }))
    } catch {
      // pino-pretty is optional: JSON is always correct
    }
  }
  return pino({ level: opts.level, base }, pino.destination({ dest: 1, sync: true }))
}
