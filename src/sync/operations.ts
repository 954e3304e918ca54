import type KcAdminClient from '@keycloak/keycloak-admin-client'
import { KeycloakRejected } from '../errors.ts'
import type { AdminApi } from '../keycloak/admin.ts'
import type { SyncItem, SyncWrite } from '../store/sync-queue.ts'
import type { UsersRepository } from '../store/users.ts'

/** What a replayed item changed, kept in its payload for `sync status` and audits. */
export interface ReplayOutcome {
  payload?: SyncWrite['payload']
  note: string
}

type GroupRep = { id?: string, path?: string, subGroups?: GroupRep[] }

/**
 * Replays one queued identity write to Keycloak's Admin API. Every operation is safe to
 * replay (a worker may die after Keycloak acted and before the item was marked done): a
 * password reset, an update or a logout done twice ends in the same state, and `user_create`
 * resolves a 409 to the existing user. Throws KeycloakRejected for a refusal (the attempt
 * counts) and KeycloakUnavailable when Keycloak cannot be reached (it does not).
 */
export async function replay (api: AdminApi, users: UsersRepository, item: SyncItem, secret: Record<string, string> | null, now: number): Promise<ReplayOutcome> {
  switch (item.operation) {
    case 'password_change': {
      const password = secret?.password
      if (password === undefined) throw new KeycloakRejected(400, 'the queued password is gone (erased or unreadable); the user must change it again')
      const id = await userId(api, item)
      if (id === null) throw new KeycloakRejected(404, `no Keycloak user named ${item.username}`)
      await api.call(async (kc) => { await kc.users.resetPassword({ id, credential: { type: 'password', value: password, temporary: false } }) })
      return { payload: { ...item.payload, keycloak_id: id }, note: 'password reset' }
    }
    case 'user_create': {
      const p = item.payload
      const representation = {
        username: item.username,
        enabled: p.enabled !== false,
        ...(typeof p.email === 'string' ? { email: p.email } : {}),
        ...(typeof p.first_name === 'string' ? { firstName: p.first_name } : {}),
        ...(typeof p.last_name === 'string' ? { lastName: p.last_name } : {}),
        ...(secret?.password !== undefined ? { credentials: [{ type: 'password', value: secret.password, temporary: false }] } : {})
      }
      let id: string
      let note = 'created'
      try {
        id = (await api.call(async (kc) => await kc.users.create(representation))).id
      } catch (err) {
        if (!(err instanceof KeycloakRejected) || err.status !== 409) throw err
        const existing = await findByUsername(api, item.username)
        if (existing === null) throw new KeycloakRejected(409, `${err.message}; no user named ${item.username} exists, so another user holds the email`)
        id = existing
        note = 'linked to the existing user'
      }
      users.setKeycloakId(item.username, id, now)
      return { payload: { ...p, keycloak_id: id, linked: note !== 'created' }, note }
    }
    case 'user_update': {
      const p = item.payload
      const id = await userId(api, item)
      if (id === null) throw new KeycloakRejected(404, `no Keycloak user named ${item.username}`)
      const changes = {
        ...(typeof p.email === 'string' ? { email: p.email } : {}),
        ...(typeof p.first_name === 'string' ? { firstName: p.first_name } : {}),
        ...(typeof p.last_name === 'string' ? { lastName: p.last_name } : {}),
        ...(typeof p.enabled === 'boolean' ? { enabled: p.enabled } : {})
      }
      await api.call(async (kc) => { await kc.users.update({ id }, changes) })
      return { payload: { ...p, keycloak_id: id }, note: 'updated' }
    }
    case 'user_disable': {
      const id = await userId(api, item)
      if (id === null) throw new KeycloakRejected(404, `no Keycloak user named ${item.username}`)
      await api.call(async (kc) => { await kc.users.update({ id }, { enabled: false }) })
      return { payload: { ...item.payload, keycloak_id: id }, note: 'disabled' }
    }
    case 'logout_user': {
      const id = await userId(api, item)
      // No such user in Keycloak: there is no Keycloak session to end.
      if (id === null) return { note: 'no Keycloak user; nothing to log out' }
      await api.call(async (kc) => { await kc.users.logout({ id }) })
      return { payload: { ...item.payload, keycloak_id: id }, note: 'sessions ended' }
    }
    case 'group_membership': {
      const p = item.payload
      const id = await userId(api, item)
      if (id === null) throw new KeycloakRejected(404, `no Keycloak user named ${item.username}`)
      const groupId = await groupIdByPath(api, p.group)
      if (groupId === null) throw new KeycloakRejected(404, `no Keycloak group ${p.group}`)
      const remove = p.action === 'remove'
      await api.call(async (kc) => {
        if (remove) await kc.users.delFromGroup({ id, groupId })
        else await kc.users.addToGroup({ id, groupId })
      })
      return { payload: { ...p, keycloak_id: id }, note: remove ? `left ${p.group}` : `joined ${p.group}` }
    }
  }
}

async function userId (api: AdminApi, item: SyncItem): Promise<string | null> {
  const known = item.payload.keycloak_id
  if (typeof known === 'string' && known !== '') return known
  return await findByUsername(api, item.username)
}

async function findByUsername (api: AdminApi, username: string): Promise<string | null> {
  const found = await api.call(async (kc: KcAdminClient) => await kc.users.find({ username, exact: true }))
  return found.find((u) => u.username?.toLowerCase() === username.toLowerCase())?.id ?? null
}

async function groupIdByPath (api: AdminApi, path: string): Promise<string | null> {
  const name = path.split('/').filter((s) => s !== '').at(-1)
  if (name === undefined) return null
  const groups = await api.call(async (kc) => await kc.groups.find({ search: name, briefRepresentation: false }) as GroupRep[])
  const walk = (list: GroupRep[] | undefined): string | null => {
    for (const g of list ?? []) {
      if (g.path === path && g.id !== undefined) return g.id
      const inner = walk(g.subGroups)
      if (inner !== null) return inner
    }
    return null
  }
  return walk(groups)
}
