import type { ConfigProblem } from '../errors.ts'
import { frozenIdentity, type Identity } from '../identity.ts'
import { Interner, internList, internString } from '../intern.ts'

/*
 * Role-based access control as NIST's RBAC model has it, levels 1 and 2 (flat and hierarchical:
 * ANSI INCITS 359-2004 §6.1 and §6.2): users get roles, roles carry permissions, and a senior
 * role inherits every permission of its juniors (`inherits`), through any number of levels.
 * Users get roles from their token (realm roles as named, client roles as `client:role`), from
 * the groups they are in (`group_roles`), or from the roles stored locally for local and
 * cached-credential users. A token role may be mapped to others (`realm_roles`,
 * `client_roles`); one not mapped is a role of its own name.
 *
 * Everything that can be worked out without a user is worked out when the policies load: the
 * closure of each defined role (itself, every junior, every permission of them all). Expanding
 * an identity is then one pass over its roles and groups, done once per verified token or
 * session identity and cached with it (decide.ts), never per request.
 */

/** A role as `roles:` defines it. */
export interface RoleDefinition {
  name: string
  permissions: readonly string[]
  /** Junior roles whose permissions (and juniors) this one has too. */
  inherits: readonly string[]
  /** Where it was defined, for messages: `file (line n): roles.name`. */
  where: string
}

/** What one defined role amounts to once inheritance is followed. */
interface Closure {
  /** The role itself, then every junior, nearest first. */
  roles: readonly string[]
  permissions: readonly string[]
}

/** The compiled role model of a policy set. */
export interface RoleModel {
  readonly defined: ReadonlyMap<string, RoleDefinition>
  readonly closures: ReadonlyMap<string, Closure>
  /** Group (full path or bare name, exactly as tokens carry it) → roles. */
  readonly groupRoles: ReadonlyMap<string, readonly string[]>
  /** Token role (a realm role, or `client:role`) → the roles it stands for instead. */
  readonly tokenRoles: ReadonlyMap<string, readonly string[]>
  /** True when nothing is defined or mapped: an identity's roles are used as they are. */
  readonly trivial: boolean
}

/** Mappings as read from every file, with where each came from. */
export interface RoleMappings {
  groupRoles: Map<string, { roles: readonly string[], where: string }>
  tokenRoles: Map<string, { roles: readonly string[], where: string }>
}

/**
 * Compiles role definitions and mappings. Problems (an inherited role that is not defined, an
 * inheritance cycle, naming its members in order) are appended to `problems`; with
 * `complete: false` (a file could not be read) undefined juniors are not reported.
 */
export function compileRoleModel (definitions: ReadonlyMap<string, RoleDefinition>, mappings: RoleMappings, problems: ConfigProblem[], options: { complete: boolean } = { complete: true }): RoleModel {
  // With a file left unread (its own problems are reported), a junior may be defined there.
  for (const role of options.complete ? definitions.values() : []) {
    for (const [i, junior] of role.inherits.entries()) {
      if (!definitions.has(junior)) problems.push({ path: `${role.where}.inherits[${i}]`, expected: 'a role defined under roles: in some policy file', received: JSON.stringify(junior) })
    }
  }
  for (const cycle of inheritanceCycles(definitions)) {
    const first = definitions.get(cycle[0] as string) as RoleDefinition
    problems.push({ path: `${first.where}.inherits`, expected: 'no inheritance cycle (a role cannot inherit itself, directly or through others)', received: `the cycle ${[...cycle, cycle[0]].join(' → ')}` })
  }
  const closures = new Map<string, Closure>()
  for (const name of definitions.keys()) closures.set(name, closureOf(name, definitions))
  const groupRoles = new Map([...mappings.groupRoles].map(([k, v]) => [k, v.roles]))
  const tokenRoles = new Map([...mappings.tokenRoles].map(([k, v]) => [k, v.roles]))
  return {
    defined: definitions,
    closures,
    groupRoles,
    tokenRoles,
    trivial: definitions.size === 0 && groupRoles.size === 0 && tokenRoles.size === 0
  }
}

// Breadth first, so the nearest juniors come first; a role met twice is counted once (a diamond
// is not a cycle). Juniors that are not defined were reported; they are skipped here.
function closureOf (name: string, definitions: ReadonlyMap<string, RoleDefinition>): Closure {
  const roles = [name]
  const seen = new Set(roles)
  const permissions = new Set<string>()
  for (let i = 0; i < roles.length; i++) {
    const role = definitions.get(roles[i] as string)
    if (role === undefined) continue
    for (const p of role.permissions) permissions.add(p)
    for (const junior of role.inherits) {
      if (seen.has(junior) || !definitions.has(junior)) continue
      seen.add(junior)
      roles.push(junior)
    }
  }
  return { roles, permissions: [...permissions] }
}

/** Every inheritance cycle, each once, as its members in order from its first-defined one. */
export function inheritanceCycles (definitions: ReadonlyMap<string, RoleDefinition>): string[][] {
  const state = new Map<string, 'open' | 'done'>()
  const stack: string[] = []
  const cycles: string[][] = []
  const visit = (name: string): void => {
    state.set(name, 'open')
    stack.push(name)
    for (const junior of definitions.get(name)?.inherits ?? []) {
      if (!definitions.has(junior)) continue
      const s = state.get(junior)
      if (s === 'open') cycles.push(stack.slice(stack.indexOf(junior)))
      else if (s === undefined) visit(junior)
    }
    stack.pop()
    state.set(name, 'done')
  }
  for (const name of definitions.keys()) if (!state.has(name)) visit(name)
  return cycles
}

/** What an identity may do, as requirements test it: sets, so each test is one lookup. */
export interface Access {
  /** Every role, expanded (mapped, from groups, inherited). */
  roles: ReadonlySet<string>
  permissions: ReadonlySet<string>
  groups: ReadonlySet<string>
  /** The e-mail address, lower-case, only when it is verified; else null. */
  email: string | null
  /** The domain of {@link email}, lower-case, or null. */
  emailDomain: string | null
}

/** What an identity's roles and groups amount to under one role model, shared by every identity with the same ones. */
interface Expansion {
  roles: readonly string[]
  permissions: readonly string[]
  roleSet: ReadonlySet<string>
  permissionSet: ReadonlySet<string>
  groupSet: ReadonlySet<string>
}

const expansions = new WeakMap<RoleModel, Interner<Expansion>>()

/**
 * The identity with its roles expanded and its permissions worked out, and its {@link Access}.
 * Called once per verified token or session identity and policy version (decide.ts caches it).
 * The expansion of one list of roles and groups is worked out once per role model and shared
 * (with its sets) by every identity that holds the same lists: tokens of one person, or of
 * people in the same groups.
 */
export function expandIdentity (identity: Identity, model: RoleModel): { identity: Identity, access: Access } {
  let table = expansions.get(model)
  if (table === undefined) {
    table = new Interner<Expansion>(4096)
    expansions.set(model, table)
  }
  const expansion = table.get(`${identity.roles.join('\u0000')}\u0001${identity.groups.join('\u0000')}`, () => expansionOf(identity, model))
  const expanded = frozenIdentity(identity, expansion.roles, expansion.permissions)
  const email = verifiedEmail(identity)
  return {
    identity: expanded,
    access: {
      roles: expansion.roleSet,
      permissions: expansion.permissionSet,
      groups: expansion.groupSet,
      email,
      emailDomain: email === null ? null : internString(email.slice(email.lastIndexOf('@') + 1))
    }
  }
}

function expansionOf (identity: Identity, model: RoleModel): Expansion {
  const roles = model.trivial ? identity.roles : expandedRoles(identity, model)
  const permissions: string[] = []
  if (!model.trivial) {
    const seen = new Set<string>()
    for (const role of roles) {
      for (const p of model.closures.get(role)?.permissions ?? []) {
        if (!seen.has(p)) {
          seen.add(p)
          permissions.push(p)
        }
      }
    }
  }
  const frozenRoles = internList(roles)
  const frozenPermissions = internList(permissions)
  return Object.freeze({
    roles: frozenRoles,
    permissions: frozenPermissions,
    roleSet: new Set(frozenRoles),
    permissionSet: new Set(frozenPermissions),
    groupSet: new Set(identity.groups)
  })
}

function expandedRoles (identity: Identity, model: RoleModel): string[] {
  const out = new Set<string>()
  const grant = (role: string): void => {
    const closure = model.closures.get(role)
    if (closure === undefined) {
      out.add(role)
      return
    }
    for (const r of closure.roles) out.add(r)
  }
  for (const role of identity.roles) {
    const mapped = model.tokenRoles.get(role)
    if (mapped === undefined) grant(role)
    else for (const r of mapped) grant(r)
  }
  for (const group of identity.groups) for (const r of model.groupRoles.get(group) ?? []) grant(r)
  return [...out]
}

/**
 * The e-mail address requirements may use: only a verified one (the `email_verified` claim
 * was true; local users' addresses are set by an operator and count as verified), lower-case,
 * and only when it has a non-empty local part and domain.
 */
export function verifiedEmail (identity: Identity): string | null {
  const email = identity.email
  if (identity.emailVerified !== true || email === null) return null
  const at = email.lastIndexOf('@')
  if (at <= 0 || at === email.length - 1) return null
  return email.toLowerCase()
}

/** Where a role or a permission came from, for `policy check`. */
export type Source =
  | { from: 'token_claim', claim: string }
  | { from: 'local_roles' }
  | { from: 'command_line' }
  | { from: 'realm_role_mapping' | 'client_role_mapping', role: string }
  | { from: 'group_mapping', group: string }
  | { from: 'inheritance', senior: string }
  | { from: 'role', role: string }

/** One role or permission an identity has, and every way it got it. */
export interface Grant {
  name: string
  sources: Source[]
}

/**
 * Why an identity has each of its roles and permissions: its own roles (from a token claim,
 * or stored locally), mappings, groups, and inheritance. `ownRoles` says where an unmapped
 * role of the identity came from. The same model and the same rules as {@link expandIdentity},
 * written out step by step for people; requests never call it.
 */
export function explainIdentity (identity: Identity, model: RoleModel, ownRoles: (role: string) => Source): { roles: Grant[], permissions: Grant[] } {
  const roles = new Map<string, Source[]>()
  const queue: string[] = []
  const add = (role: string, source: Source): void => {
    let sources = roles.get(role)
    if (sources === undefined) {
      sources = []
      roles.set(role, sources)
      queue.push(role)
    }
    if (!sources.some((s) => JSON.stringify(s) === JSON.stringify(source))) sources.push(source)
  }
  for (const role of identity.roles) {
    const mapped = model.tokenRoles.get(role)
    if (mapped === undefined) add(role, ownRoles(role))
    else for (const r of mapped) add(r, { from: role.includes(':') ? 'client_role_mapping' : 'realm_role_mapping', role })
  }
  for (const group of identity.groups) for (const r of model.groupRoles.get(group) ?? []) add(r, { from: 'group_mapping', group })
  for (let i = 0; i < queue.length; i++) {
    const senior = queue[i] as string
    for (const junior of model.defined.get(senior)?.inherits ?? []) if (model.defined.has(junior)) add(junior, { from: 'inheritance', senior })
  }
  const permissions = new Map<string, Source[]>()
  for (const role of roles.keys()) {
    for (const p of model.defined.get(role)?.permissions ?? []) {
      const sources = permissions.get(p) ?? []
      sources.push({ from: 'role', role })
      permissions.set(p, sources)
    }
  }
  return {
    roles: [...roles].map(([name, sources]) => ({ name, sources })),
    permissions: [...permissions].map(([name, sources]) => ({ name, sources }))
  }
}

/** A source in words: `token claim realm_access.roles`, `inherited from admin`. */
export function describeSource (source: Source): string {
  switch (source.from) {
    case 'token_claim': return `token claim ${source.claim}`
    case 'local_roles': return 'local roles'
    case 'command_line': return 'given on the command line'
    case 'realm_role_mapping': return `realm role ${source.role} (realm_roles)`
    case 'client_role_mapping': return `client role ${source.role} (client_roles)`
    case 'group_mapping': return `group ${source.group} (group_roles)`
    case 'inheritance': return `inherited from ${source.senior}`
    case 'role': return `role ${source.role}`
  }
}
