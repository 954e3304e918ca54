import { DEFAULT_CONFIG_PATH } from '../config/load.ts'
import { VERSION } from '../version.ts'
import { DEFAULT_CLEANUP_DAYS } from './sessions-command.ts'
import { DEFAULT_SYNC_CLEANUP_DAYS } from './sync-command.ts'
import { DEFAULT_TOKENS_CLEANUP_DAYS } from './tokens-command.ts'
import { POLICY_CHECK_REFUSED } from './policy-command.ts'

/**
 * The command line's grammar in one table: every command, its subcommands, the options each
 * one takes, and the usage text printed by `gatehouse [COMMAND] --help`. `run.ts` parses
 * against it, so an option is accepted exactly where its usage line says.
 */

/** Every option of the command line, as `node:util` `parseArgs` reads it. */
export const OPTIONS = {
  config: { type: 'string', short: 'c' },
  json: { type: 'boolean' },
  email: { type: 'string' },
  role: { type: 'string', multiple: true },
  group: { type: 'string', multiple: true },
  days: { type: 'string' },
  all: { type: 'boolean' },
  'all-dead': { type: 'boolean' },
  'dry-run': { type: 'boolean' },
  'batch-size': { type: 'string' },
  user: { type: 'string' },
  token: { type: 'string' },
  roles: { type: 'string' },
  groups: { type: 'string' },
  method: { type: 'string' },
  path: { type: 'string' },
  host: { type: 'string' },
  description: { type: 'string' },
  'expires-days': { type: 'string' },
  'grace-days': { type: 'string' },
  'auto-rotate-days': { type: 'string' },
  'previous-only': { type: 'boolean' },
  help: { type: 'boolean', short: 'h' },
  version: { type: 'boolean' }
} as const

/** The name of an option, long form without the dashes. */
export type OptionName = keyof typeof OPTIONS

/** Options every command takes: `-c/--config`, `-h/--help` and `--version`. */
export const GLOBAL_OPTIONS: readonly OptionName[] = ['config', 'help', 'version']

/** One command line a command accepts, with the options it takes beyond the global ones. */
export interface CommandForm {
  /** The subcommand (`add` of `users add`), or null for a command without subcommands. */
  sub: string | null
  /** The usage line after `gatehouse ` (`users add USER [--email E]...`). */
  usage: string
  /** What it does, one or more lines. */
  summary: string
  options: readonly OptionName[]
}

/** A command and its forms. */
export interface CommandSpec {
  name: string
  forms: readonly CommandForm[]
  /** Extra text for this command's `--help`: exit codes beyond 0/1/2, notes. */
  notes?: string
}

/**
 * Exit codes of `gatehouse status`, for scripts and probes: 0 normal (Keycloak reachable),
 * 3 degraded (running on cached Keycloak material), 4 offline (local logins only). Above the
 * 1 (failure) and 2 (usage or configuration) every command uses, so `status` can still say it
 * could not find out; ordered by severity, so `[ $? -ge 3 ]` means "not normal".
 */
export const STATUS_EXIT_CODES = { normal: 0, degraded: 3, offline: 4 } as const

/** Every command, in the order `gatehouse --help` lists them. */
export const COMMANDS: readonly CommandSpec[] = [
  { name: 'serve', forms: [{ sub: null, usage: 'serve', summary: 'run the proxy and admin listeners; SIGTERM or SIGINT stops them gracefully,\nSIGHUP reloads the policies', options: [] }] },
  {
    name: 'config',
    forms: [
      { sub: 'validate', usage: 'config validate', summary: 'check the configuration and policies exactly as serve would (exit 2 on problems);\nwarns when the database location cannot be created or written', options: ['json'] },
      { sub: 'show', usage: 'config show', summary: 'print the effective configuration, secrets redacted', options: ['json'] }
    ]
  },
  {
    name: 'status',
    forms: [{ sub: null, usage: 'status', summary: 'mode, Keycloak servers and circuits, JWKS: from the running instance\'s\nadmin listener, else from the database and live health checks', options: ['json'] }],
    notes: `exit codes of status: ${STATUS_EXIT_CODES.normal} mode normal, ${STATUS_EXIT_CODES.degraded} degraded (Keycloak's mode, or the session store), ${STATUS_EXIT_CODES.offline} offline (the report is printed in every case);\n1 the status could not be read, 2 invalid usage or configuration`
  },
  {
    name: 'users',
    forms: [
      { sub: 'add', usage: 'users add USER [--email E] [--role R]... [--group G]...', summary: 'add a local user; the password is read from standard input\n(first line), or prompted for twice when it is a terminal', options: ['json', 'email', 'role', 'group'] },
      { sub: 'passwd', usage: 'users passwd USER', summary: 'set a local user\'s password (read as for users add)', options: ['json'] },
      { sub: 'disable', usage: 'users disable USER', summary: 'refuse the user\'s logins and end their live sessions', options: ['json'] },
      { sub: 'enable', usage: 'users enable USER', summary: 'allow the user\'s logins again', options: ['json'] },
      { sub: 'list', usage: 'users list', summary: 'users, roles, groups and state (never password hashes)', options: ['json'] },
      { sub: 'migrate-to-keycloak', usage: 'users migrate-to-keycloak [--dry-run] [--role R]... [--batch-size N]', summary: 'provision local users into Keycloak through the sync queue (idempotent;\nusers Keycloak already has are linked); --dry-run changes nothing', options: ['json', 'dry-run', 'role', 'batch-size'] }
    ]
  },
  {
    name: 'sessions',
    forms: [
      { sub: 'list', usage: 'sessions list [USER] [--all]', summary: 'live sessions (--all: ended ones too), newest first', options: ['json', 'all'] },
      { sub: 'invalidate', usage: 'sessions invalidate ID', summary: 'end one session and forget its cached tokens', options: ['json'] },
      { sub: 'logout-user', usage: 'sessions logout-user USER', summary: 'end every live session of USER and queue the Keycloak logout\n(exit 1 when no user or session of that name is known)', options: ['json'] },
      { sub: 'cleanup', usage: 'sessions cleanup [--days N]', summary: `end expired sessions; purge sessions ended more than N days ago\n(default ${DEFAULT_CLEANUP_DAYS}), stale cached tokens and old login attempts`, options: ['json', 'days'] },
      { sub: 'metrics', usage: 'sessions metrics', summary: 'active sessions by mode, logins in the last hour by mode and result', options: ['json'] }
    ]
  },
  {
    name: 'sync',
    forms: [
      { sub: 'status', usage: 'sync status', summary: 'the Keycloak sync queue: counts by status and operation, oldest\nunfinished item, last error, the unfinished items', options: ['json'] },
      { sub: 'now', usage: 'sync now', summary: 'replay due items once (exit 1 when Keycloak is unreachable)', options: ['json'] },
      { sub: 'retry', usage: 'sync retry ID | --all-dead', summary: 'put failed or dead items back in the queue (exit 1 when there is\nno such item or it is neither failed nor dead)', options: ['json', 'all-dead'] },
      { sub: 'cleanup', usage: 'sync cleanup [--days N]', summary: `remove done items older than N days (default ${DEFAULT_SYNC_CLEANUP_DAYS})`, options: ['json', 'days'] },
      { sub: 'start', usage: 'sync start', summary: 'run the replay worker in the foreground (with sync.enabled: false in\nserve); SIGTERM or SIGINT stops it cleanly', options: [] }
    ]
  },
  {
    name: 'tokens',
    forms: [
      { sub: 'create', usage: 'tokens create NAME --roles a,b [--expires-days N] [--description TEXT] [--auto-rotate-days N]', summary: 'issue a service token (ght_...) for a machine client; printed once, on standard\noutput, never again (default lifetime service_tokens.default_expires_days);\n--auto-rotate-days: rotate it N days before expiry (see service_tokens.auto_rotate)', options: ['json', 'roles', 'description', 'expires-days', 'auto-rotate-days'] },
      { sub: 'rotate', usage: 'tokens rotate NAME [--grace-days N]', summary: 'print a new current token; the previous one stays valid for N days\n(default service_tokens.default_grace_days), never beyond its own expiry', options: ['json', 'grace-days'] },
      { sub: 'revoke', usage: 'tokens revoke NAME [--previous-only]', summary: 'refuse the token from the next request on (every process on the database);\n--previous-only: end the previous token\'s grace period now', options: ['json', 'previous-only'] },
      { sub: 'list', usage: 'tokens list', summary: 'name, id, state, roles, created, expires, last used, live previous token\n(never a secret)', options: ['json'] },
      { sub: 'cleanup', usage: 'tokens cleanup [--days N]', summary: `forget previous tokens past their grace period; purge tokens revoked or\nexpired more than N days ago (default ${DEFAULT_TOKENS_CLEANUP_DAYS})`, options: ['json', 'days'] }
    ]
  },
  {
    name: 'policy',
    forms: [
      { sub: 'validate', usage: 'policy validate [DIR]', summary: 'check the policies (policies.dir, or DIR) as serve loads them: every problem\nwith its file and line (exit 2 on problems)', options: ['json'] },
      {
        sub: 'check',
        usage: 'policy check --user U | --token JWT | --roles a,b [--groups g,h] [--email E] --path P [--method M] [--host H]',
        summary: `decide a request as the running server would (the same decide()), and print\nthe decision, the rule, what was missing, the roles and permissions and where\neach came from; --user reads a local user or a live session, --token - reads\nthe token from standard input; exit ${POLICY_CHECK_REFUSED} when the request would not pass`,
        options: ['json', 'user', 'token', 'roles', 'groups', 'email', 'method', 'path', 'host']
      }
    ]
  },
  {
    name: 'doctor',
    forms: [
      { sub: 'diagnose', usage: 'doctor diagnose', summary: 'check config, database, permissions, each Keycloak server (reachability,\nissuer, clock skew), client credentials, JWKS, sync queue, policies, e-mail\nand the running instance: a pass, warn or fail line each, with the fix\n(exit 1 when a check failed)', options: ['json'] },
      { sub: 'fix', usage: 'doctor fix', summary: 'apply the safe fixes: create the database and missing tables, give back\nexpired sync leases, reset the running instance\'s circuits, remove\nexpired tokens', options: ['json'] },
      { sub: 'test-auth', usage: 'doctor test-auth USER', summary: 'walk USER through every layer (local, Keycloak, token cache, sync queue)\nand say which would let them in now; a password piped on standard input\nis checked too (exit 1 when nothing would)', options: ['json'] }
    ]
  },
  { name: 'version', forms: [{ sub: null, usage: 'version', summary: 'print the version (as --version does)', options: [] }] },
  { name: 'help', forms: [{ sub: null, usage: 'help [COMMAND]', summary: 'this text, or one command\'s (as gatehouse COMMAND --help)', options: [] }] }
]

/** The command called `name`, or undefined. */
export function commandSpec (name: string): CommandSpec | undefined {
  return COMMANDS.find((c) => c.name === name)
}

const OPTIONS_TEXT = `options:
  -c, --config PATH     configuration file (default: $GATEHOUSE_CONFIG or ${DEFAULT_CONFIG_PATH})
      --json            print JSON instead of text where a command prints a table or report
  -h, --help            usage (gatehouse COMMAND --help: that command's)
      --version         print the version`

const EXIT_CODES_TEXT = 'exit codes: 0 success, 1 failure, 2 invalid usage or configuration'

function formLines (form: CommandForm): string {
  const summary = form.summary.split('\n')
  // Usage and summary share a line when the usage is short, as in most tools' help.
  if (form.usage.length <= 20) {
    return [`  ${form.usage.padEnd(20)}  ${summary[0] ?? ''}`, ...summary.slice(1).map((l) => `${' '.repeat(24)}${l}`)].join('\n')
  }
  return [`  ${form.usage}`, ...summary.map((l) => `${' '.repeat(24)}${l}`)].join('\n')
}

/** `gatehouse --help`: every command. */
export function mainUsage (): string {
  return [
    `gatehouse ${VERSION}: authentication sidecar for apps behind Keycloak`,
    '',
    'usage: gatehouse <command> [options]',
    '',
    'commands:',
    ...COMMANDS.flatMap((c) => c.forms.map(formLines)),
    '',
    OPTIONS_TEXT,
    '',
    EXIT_CODES_TEXT,
    `status exits ${STATUS_EXIT_CODES.degraded} when the mode is degraded and ${STATUS_EXIT_CODES.offline} when it is offline (gatehouse status --help)`
  ].join('\n')
}

/** `gatehouse COMMAND --help`: that command's forms and options only. */
export function commandUsage (spec: CommandSpec): string {
  const hasSubs = spec.forms.some((f) => f.sub !== null)
  const takes = new Set(spec.forms.flatMap((f) => f.options))
  const options = OPTIONS_TEXT.split('\n').filter((line) => !line.includes('--json') || takes.has('json'))
  return [
    `usage: gatehouse ${spec.name}${hasSubs ? ' <subcommand>' : ''} [options]`,
    '',
    ...(hasSubs ? ['subcommands:'] : []),
    ...spec.forms.map(formLines),
    '',
    ...options,
    '',
    EXIT_CODES_TEXT,
    ...(spec.notes !== undefined ? [spec.notes] : [])
  ].join('\n')
}
