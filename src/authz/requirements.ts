import type { Clause, Requirement } from './policy.ts'
import type { Access } from './roles.ts'

/** Why an authenticated caller is refused by a rule's conditions (the decision's reason). */
export type ShortfallReason = 'missing_role' | 'missing_permission' | 'missing_group' | 'email_not_allowed'

/** The first condition a caller does not meet, and what it lacks, in words for the access log. */
export interface Shortfall {
  clause: Clause
  reason: ShortfallReason
  /** `any of roles admin, ops`, `permissions reports:write`: names from the policy, never the caller's data. */
  missing: string
}

/**
 * The first clause of `requirement` that `access` does not meet, or null when every one holds
 * (and for public and authenticated; deny is decided before anyone is authenticated). Allocates
 * nothing unless a clause fails.
 */
export function shortfall (requirement: Requirement, access: Access): Shortfall | null {
  if (requirement.kind !== 'conditions') return null
  for (const clause of requirement.clauses) {
    if (!holds(clause, access)) return describe(clause, access)
  }
  return null
}

function holds (clause: Clause, access: Access): boolean {
  switch (clause.kind) {
    case 'any_role':
      for (const role of clause.roles) if (access.roles.has(role)) return true
      return false
    case 'all_roles':
      for (const role of clause.roles) if (!access.roles.has(role)) return false
      return true
    case 'permissions':
      for (const p of clause.permissions) if (!access.permissions.has(p)) return false
      return true
    case 'any_group':
      for (const group of clause.groups) if (access.groups.has(group)) return true
      return false
    case 'email':
      if (access.email === null) return false
      return clause.emails.includes(access.email) || (access.emailDomain !== null && clause.domains.includes(access.emailDomain))
  }
}

function describe (clause: Clause, access: Access): Shortfall {
  switch (clause.kind) {
    case 'any_role':
      return { clause, reason: 'missing_role', missing: `any of roles ${clause.roles.join(', ')}` }
    case 'all_roles':
      return { clause, reason: 'missing_role', missing: `roles ${clause.roles.filter((r) => !access.roles.has(r)).join(', ')} (all of ${clause.roles.join(', ')})` }
    case 'permissions':
      return { clause, reason: 'missing_permission', missing: `permissions ${clause.permissions.filter((p) => !access.permissions.has(p)).join(', ')}` }
    case 'any_group':
      return { clause, reason: 'missing_group', missing: `any of groups ${clause.groups.join(', ')}` }
    case 'email': {
      const allowed = [...clause.emails, ...clause.domains.map((d) => `@${d}`)].join(', ')
      return { clause, reason: 'email_not_allowed', missing: `${access.email === null ? 'a verified e-mail address' : 'an e-mail address'} in ${allowed}` }
    }
  }
}
