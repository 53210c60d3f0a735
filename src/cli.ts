/**
 * The command line (commander): run | plan | cleanup | lab. The only place that reads process.env and the
 * `_FILE` configurations; everything after it works on RawSettings → Config. Exit codes: 0 ok, 2 invalid
 * configuration (nothing touched), 1 runtime failure (rolled back).
 */
import { readFileSync } from 'node:fs'
import { Command, Option } from 'commander'
import { parseConfig } from './config/config.js'
import { readRawSettings, VARIABLES } from './config/env.js'
import type { Config, RawSettings } from './config/types.js'
import { ConfigError, formatIssue, type ConfigIssue } from './errors.js'
import { unitTestOutput } from './plan/iptables-compat.js'

export const EXIT_OK = 0
export const EXIT_RUNTIME = 1
export const EXIT_CONFIG = 2

/** Adds one flag per variable; help names the variable and its default. */
function addConfigOptions (cmd: Command): Command {
  for (const v of VARIABLES) {
    const extra = [`env: ${v.name}`]
    if (v.default !== undefined) extra.push(`default: ${v.default === '' ? '(empty)' : v.default}`)
    cmd.addOption(new Option(v.flag, `${v.description} (${extra.join(', ')})`))
  }
  cmd.addOption(new Option('--log-format <format>', 'json or pretty (default: pretty on a terminal, json otherwise)').choices(['json', 'pretty']))
  return cmd
}

/** Flag values keyed by the variable they stand for. */
function flagsByVariable (cmd: Command): Record<string, string | undefined> {
  const opts = cmd.opts<Record<string, unknown>>()
  const out: Record<string, string | undefined> = {}
  for (const v of VARIABLES) {
    const key = new Option(v.flag).attributeName()
    const value = opts[key]
    if (typeof value === 'string') out[v.name] = value
    else if (value === true) out[v.name] = 'true'
  }
  return out
}

/** argv + env + files → Config, or the list of problems. */
export function loadConfig (env: Record<string, string | undefined>, flags: Record<string, string | undefined>,
  readFile: (path: string) => string = (p) => readFileSync(p, 'utf8')): { config: Config, settings: RawSettings } | { issues: ConfigIssue[] } {
  const raw = readRawSettings(env, flags, readFile)
  if ('issues' in raw) return { issues: raw.issues }
  const parsed = parseConfig(raw.settings)
  return parsed.ok ? { config: parsed.config, settings: raw.settings } : { issues: parsed.issues }
}

function reportIssues (issues: readonly ConfigIssue[]): number {
  for (const issue of issues) process.stderr.write(`${formatIssue(issue)}\n`)
  return EXIT_CONFIG
}

function loadOrExit (cmd: Command): Config | number {
  const loaded = loadSettingsOrExit(cmd)
  return typeof loaded === 'number' ? loaded : loaded.config
}

/** The configuration and the settings it was parsed from (the daemon's workers parse the same text). */
function loadSettingsOrExit (cmd: Command): { config: Config, settings: RawSettings } | number {
  const loaded = loadConfig(process.env, flagsByVariable(cmd))
  return 'issues' in loaded ? reportIssues(loaded.issues) : loaded
}

export function buildProgram (setExit: (code: number) => void): Command {
  const program = new Command('egress-router')
    .description('Linux egress router: sends client traffic out from one reserved source IP on a macvlan (redirect, http-proxy and dns-proxy modes)')
    .showHelpAfterError()
    .enablePositionalOptions()
    // before the subcommands: they inherit it, so a usage error anywhere becomes exit 2 instead of process.exit
    .exitOverride()

  addConfigOptions(program.command('run', { isDefault: true })
    .description('run in the mode of EGRESS_ROUTER_MODE (the default command)'))
    .action(async (_o, cmd: Command) => {
      const loaded = loadSettingsOrExit(cmd)
      if (typeof loaded === 'number') return setExit(loaded)
      const { config, settings } = loaded
      if (config.mode === 'unit-test') {
        process.stdout.write(unitTestOutput(config))
        return setExit(EXIT_OK)
      }
      const { runDaemon } = await import('./lifecycle/daemon.js')
      setExit(await runDaemon(config, { logFormat: cmd.opts().logFormat, env: process.env, flags: flagsByVariable(cmd), settings }))
    })

  addConfigOptions(program.command('plan')
    .description('validate everything and print what would be done; changes nothing (exit 0 valid, 2 invalid)')
    .option('--json', 'print the plan as JSON'))
    .action(async (_o, cmd: Command) => {
      const config = loadOrExit(cmd)
      if (typeof config === 'number') return setExit(config)
      const { planCommand } = await import('./lifecycle/plan-command.js')
      setExit(await planCommand(config, { json: cmd.opts().json === true }))
    })

  addConfigOptions(program.command('cleanup')
    .description('remove everything this daemon may have created (own nft table, policy rules and routes, a macvlan it created); idempotent'))
    .action(async (_o, cmd: Command) => {
      const { cleanupCommand } = await import('./lifecycle/cleanup-command.js')
      setExit(await cleanupCommand(process.env, flagsByVariable(cmd), { logFormat: cmd.opts().logFormat }))
    })

  program.command('lab')
    .description('build a throw-away namespace topology, run the router in it, prove with real traffic that the destination sees EGRESS_SOURCE, tear it down')
    .addOption(new Option('--mode <mode>', 'router mode to demonstrate').choices(['redirect', 'http-proxy', 'dns-proxy']).default('redirect'))
    .option('--keep', 'leave the topology up and print how to explore it')
    .option('--ipv6', 'use IPv6 addresses (2001:db8::/32)')
    .action(async (opts: { mode: 'redirect' | 'http-proxy' | 'dns-proxy', keep?: boolean, ipv6?: boolean }) => {
      const { labCommand } = await import('./lab/lab.js')
      setExit(await labCommand({ mode: opts.mode, keep: opts.keep === true, ipv6: opts.ipv6 === true }))
    })
  return program
}

export async function main (argv: string[]): Promise<void> {
  let code = EXIT_OK
  const program = buildProgram((c) => { code = c })
  try {
    await program.parseAsync(argv)
  } catch (err) {
    const e = err as { code?: string, exitCode?: number }
    if (typeof e.code === 'string' && e.code.startsWith('commander.')) {
      code = e.code === 'commander.helpDisplayed' || e.code === 'commander.version' ? EXIT_OK : EXIT_CONFIG
    } else if (err instanceof ConfigError) {
      code = reportIssues(err.issues)
    } else {
      process.stderr.write(`egress-router: ${err instanceof Error ? err.message : String(err)}\n`)
      code = EXIT_RUNTIME
    }
  }
  process.exitCode = code
}
