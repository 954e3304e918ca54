/**
 * The Redis session store's Lua scripts: each one operation of the session-store contract,
 * run atomically by Redis (EVALSHA; "Scripting with Lua", redis.io/docs/interact/programmability),
 * so a replica never sees half a write and every operation costs one round trip.
 *
 * Keys, under the configured prefix P (only the SHA-256 of a secret ever appears in a key):
 * - `P secret:{sha256 hex}` → session id, expiring at the session's absolute end;
 * - `P session:{id}` → hash of the session (its tokens encrypted, field `tok`), same expiry;
 *   an ended session keeps its hash (`ended`, `reason`) until then, for `sessions list --all`;
 * - `P live`, `P seen`, `P mode:{mode}` → sorted sets of live ids by absolute end, last seen, end;
 * - `P all` → every id by creation; `P user:{name}`, `P sub:{subject}`, `P sid:{sid}` → id sets;
 * - `P tok:access`, `P tok:cached`, `P tok:refresh` → live sessions' tokens by access expiry,
 *   by caching time, and (those with a refresh token) by access expiry;
 * - `P revoked` → ended ids by end time: what a replica back from a partition reads to resync;
 * - `P lock:{id}` → the refresh lock (its fence), `P fence:{id}` → the session's fence counter;
 * - `P att:seq`, `P att:u:{user}`, `P att:ip:{ip}` → login attempts (member: sequence, score: time);
 * - `P sync:lease:{user}`, `P sync:replayed:{user}` → a user's sync replay turn and what was replayed when;
 * - channel `P revocations` → JSON `{ ids, reason, at }` of every end;
 * - `P service-tokens` → hash of service-token records (issue 16) by name, each the JSON of a
 *   `SharedTokenRecord` (identifiers and SHA-256 digests, never a token);
 * - channel `P service-tokens` → JSON `{ records, deleted }` of every change to them.
 * The scripts name keys from ARGV (a prefix), which standalone Redis and Sentinel allow;
 * Redis Cluster, which needs every key declared and in one slot, is not supported.
 */

// Shared by every script that ends sessions: clears a session's tokens and indexes, records the
// end, and returns whether the session was live. A session whose key already expired (its
// absolute end passed) is cleaned from the indexes and counted as ended too.
const END_ONE = `
local function clear_indexes(p, id)
  redis.call('ZREM', p..'live', id)
  redis.call('ZREM', p..'seen', id)
  redis.call('ZREM', p..'mode:keycloak', id)
  redis.call('ZREM', p..'mode:cached', id)
  redis.call('ZREM', p..'mode:local', id)
  redis.call('ZREM', p..'tok:access', id)
  redis.call('ZREM', p..'tok:cached', id)
  redis.call('ZREM', p..'tok:refresh', id)
end
local function end_one(p, id, now, reason, force)
  local key = p..'session:'..id
  local live = redis.call('ZSCORE', p..'live', id)
  if redis.call('EXISTS', key) == 1 then
    if redis.call('HEXISTS', key, 'ended') == 1 then return false end
    redis.call('HSET', key, 'ended', now, 'reason', reason)
    redis.call('HDEL', key, 'tok')
    local hash = redis.call('HGET', key, 'hash')
    if hash then redis.call('DEL', p..'secret:'..hash) end
  elseif not live and not force then
    return false
  end
  clear_indexes(p, id)
  redis.call('ZADD', p..'revoked', now, id)
  return true
end
local function publish(p, ids, reason, now)
  if #ids > 0 then redis.call('PUBLISH', p..'revocations', cjson.encode({ ids = ids, reason = reason, at = tonumber(now) })) end
end
`

// Which of two copies of one service token wins (see 006-shared-service-tokens.sql): the newer
// lineage (created_at), then a revoked one (a revocation is never undone by a merge), then the
// larger rev; Redis' copy on a tie. A revoked incoming copy of the same token over a newer
// unrevoked one revokes that (its later rotation included), so a revoke made during an outage
// holds whatever happened meanwhile.
const MERGE_TOKEN = `
local function merge_token(cur, inc)
  if cur == nil then return inc, true end
  if inc.created_at > cur.created_at then return inc, true end
  if inc.created_at < cur.created_at then return cur, false end
  if cur.revoked_at ~= nil then return cur, false end
  if inc.revoked_at ~= nil then
    if inc.rev > cur.rev then return inc, true end
    cur.revoked_at = inc.revoked_at
    cur.previous_id = nil
    cur.previous_hash = nil
    cur.previous_valid_until = nil
    cur.rev = cur.rev + 1
    return cur, true
  end
  if inc.rev > cur.rev then return inc, true end
  return cur, false
end
`

/** Each script's source, by the command name ioredis defines for it. */
export const SCRIPTS = {
  // ARGV: prefix, id, hash, static JSON, mode, identity JSON, subject, sid, seen, expiresAt,
  // createdAt, username, onlyIfAbsent ('1': a replay or re-push, never over an existing or
  // revoked session), tok, accessExpiresAt, cachedAt, hasRefresh ('1'/'0'). Returns 1 if written.
  ghInsert: `
local p, id = ARGV[1], ARGV[2]
local key = p..'session:'..id
if ARGV[13] == '1' and (redis.call('EXISTS', key) == 1 or redis.call('ZSCORE', p..'revoked', id)) then return 0 end
local exp = ARGV[10]
redis.call('DEL', key)
redis.call('HSET', key, 'hash', ARGV[3], 'static', ARGV[4], 'mode', ARGV[5], 'identity', ARGV[6], 'seen', ARGV[9], 'exp', exp, 'fence', 0)
if ARGV[7] ~= '' then redis.call('HSET', key, 'subject', ARGV[7]) end
if ARGV[8] ~= '' then redis.call('HSET', key, 'sid', ARGV[8]) end
redis.call('PEXPIREAT', key, exp)
redis.call('SET', p..'secret:'..ARGV[3], id, 'PXAT', exp)
redis.call('ZADD', p..'live', exp, id)
redis.call('ZADD', p..'seen', ARGV[9], id)
redis.call('ZADD', p..'mode:'..ARGV[5], exp, id)
redis.call('ZADD', p..'all', ARGV[11], id)
local function index(name)
  redis.call('SADD', name, id)
  if redis.call('PEXPIRETIME', name) < tonumber(exp) then redis.call('PEXPIREAT', name, exp) end
end
index(p..'user:'..ARGV[12])
if ARGV[7] ~= '' then index(p..'sub:'..ARGV[7]) end
if ARGV[8] ~= '' then index(p..'sid:'..ARGV[8]) end
if ARGV[14] ~= '' then
  redis.call('HSET', key, 'tok', ARGV[14])
  redis.call('ZADD', p..'tok:access', ARGV[15], id)
  redis.call('ZADD', p..'tok:cached', ARGV[16], id)
  if ARGV[17] == '1' then redis.call('ZADD', p..'tok:refresh', ARGV[15], id) end
end
return 1
`,

  // ARGV: prefix, hash, localId ('' when this replica has no copy). Returns the session's
  // fields (flat), or for the local copy's id when the secret is unknown: 'ended' (its hash
  // says so), 'revoked' (its end is recorded), or 'missing' (Redis lost it: re-push the copy).
  ghFind: `
local p = ARGV[1]
local id = redis.call('GET', p..'secret:'..ARGV[2])
if id then
  local fields = redis.call('HGETALL', p..'session:'..id)
  if #fields > 0 then
    table.insert(fields, 'id')
    table.insert(fields, id)
    return fields
  end
end
local localId = ARGV[3]
if localId == '' then return false end
if redis.call('EXISTS', p..'session:'..localId) == 1 then return 'ended' end
if redis.call('ZSCORE', p..'revoked', localId) then return 'revoked' end
return 'missing'
`,

  // ARGV: prefix, id. The session's fields (flat, with its id), or false.
  ghGet: `
local fields = redis.call('HGETALL', ARGV[1]..'session:'..ARGV[2])
if #fields == 0 then return false end
table.insert(fields, 'id')
table.insert(fields, ARGV[2])
return fields
`,

  // ARGV: prefix, then id, time pairs. Last-seen only moves forward, and only for live sessions.
  ghTouch: `
local p = ARGV[1]
for i = 2, #ARGV, 2 do
  local id, at = ARGV[i], ARGV[i + 1]
  local key = p..'session:'..id
  if redis.call('EXISTS', key) == 1 and redis.call('HEXISTS', key, 'ended') == 0 then
    local seen = tonumber(redis.call('HGET', key, 'seen') or '0')
    if tonumber(at) > seen then
      redis.call('HSET', key, 'seen', at)
      redis.call('ZADD', p..'seen', 'XX', 'GT', at, id)
    end
  end
end
return 1
`,

  // ARGV: prefix, id, fence ('' for none), mode, identity JSON, subject, sid, tokens ('keep',
  // 'drop' or 'set'), tok, accessExpiresAt, cachedAt, hasRefresh. Returns 1 if written; 0 when
  // the session is gone or ended, or a larger fence wrote since.
  ghUpdate: `
local p, id = ARGV[1], ARGV[2]
local key = p..'session:'..id
if redis.call('EXISTS', key) == 0 or redis.call('HEXISTS', key, 'ended') == 1 then return 0 end
if ARGV[3] ~= '' then
  if tonumber(redis.call('HGET', key, 'fence') or '0') > tonumber(ARGV[3]) then return 0 end
  redis.call('HSET', key, 'fence', ARGV[3])
end
local exp = redis.call('HGET', key, 'exp')
local old = redis.call('HGET', key, 'mode')
if old ~= ARGV[4] then
  redis.call('ZREM', p..'mode:'..old, id)
  redis.call('ZADD', p..'mode:'..ARGV[4], exp, id)
end
redis.call('HSET', key, 'mode', ARGV[4], 'identity', ARGV[5])
if ARGV[6] ~= '' then redis.call('HSET', key, 'subject', ARGV[6]) else redis.call('HDEL', key, 'subject') end
if ARGV[7] ~= '' then
  redis.call('HSET', key, 'sid', ARGV[7])
  redis.call('SADD', p..'sid:'..ARGV[7], id)
  redis.call('PEXPIREAT', p..'sid:'..ARGV[7], exp)
else
  redis.call('HDEL', key, 'sid')
end
if ARGV[8] == 'set' then
  redis.call('HSET', key, 'tok', ARGV[9])
  redis.call('ZADD', p..'tok:access', ARGV[10], id)
  redis.call('ZADD', p..'tok:cached', ARGV[11], id)
  if ARGV[12] == '1' then redis.call('ZADD', p..'tok:refresh', ARGV[10], id) else redis.call('ZREM', p..'tok:refresh', id) end
elseif ARGV[8] == 'drop' then
  redis.call('HDEL', key, 'tok')
  redis.call('ZREM', p..'tok:access', id)
  redis.call('ZREM', p..'tok:cached', id)
  redis.call('ZREM', p..'tok:refresh', id)
end
return 1
`,

  // ARGV: prefix, now, reason, force, ids... Ends them, tells every replica; returns the ids
  // that were live. force ('1', a replay): recorded and told even when Redis never had them
  // (it restarted empty), so every replica's copy ends too.
  ghEnd: `${END_ONE}
local p, now, reason, force = ARGV[1], ARGV[2], ARGV[3], ARGV[4] == '1'
local ended = {}
for i = 5, #ARGV do
  if end_one(p, ARGV[i], now, reason, force) then table.insert(ended, ARGV[i]) end
end
publish(p, ended, reason, now)
return ended
`,

  // ARGV: prefix, now, reason, sid, subject, username, sidless ('1'/'0'), except, before
  // (only sessions created at or before it; '' for any). Returns the ids ended.
  ghEndWhere: `${END_ONE}
local p, now, reason = ARGV[1], ARGV[2], ARGV[3]
local candidates = {}
local function add(name) for _, id in ipairs(redis.call('SMEMBERS', name)) do candidates[id] = true end end
if ARGV[4] ~= '' then add(p..'sid:'..ARGV[4]) end
if ARGV[5] ~= '' then add(p..'sub:'..ARGV[5]) end
if ARGV[6] ~= '' then add(p..'user:'..ARGV[6]) end
local ended = {}
for id in pairs(candidates) do
  local key = p..'session:'..id
  local ok = redis.call('EXISTS', key) == 1 and redis.call('HEXISTS', key, 'ended') == 0 and id ~= ARGV[8]
  if ok and ARGV[7] == '1' and redis.call('HEXISTS', key, 'sid') == 1 then ok = false end
  if ok and ARGV[9] ~= '' then
    local created = tonumber(redis.call('ZSCORE', p..'all', id) or '0')
    ok = created <= tonumber(ARGV[9])
  end
  if ok and end_one(p, id, now, reason) then table.insert(ended, id) end
end
publish(p, ended, reason, now)
return ended
`,

  // ARGV: prefix, now, idleMs. Ends sessions past their absolute end or idle too long; returns how many.
  ghExpire: `${END_ONE}
local p, now = ARGV[1], tonumber(ARGV[2])
local ids = {}
for _, id in ipairs(redis.call('ZRANGEBYSCORE', p..'live', '-inf', now)) do ids[id] = true end
for _, id in ipairs(redis.call('ZRANGEBYSCORE', p..'seen', '-inf', now - tonumber(ARGV[3]))) do ids[id] = true end
local ended = {}
for id in pairs(ids) do
  if end_one(p, id, ARGV[2], 'expired') then table.insert(ended, id) end
end
publish(p, ended, 'expired', ARGV[2])
return #ended
`,

  // ARGV: prefix, before. Deletes sessions that ended at or before it; returns how many.
  ghPurge: `
local p = ARGV[1]
local ids = redis.call('ZRANGEBYSCORE', p..'revoked', '-inf', ARGV[2])
for _, id in ipairs(ids) do
  redis.call('DEL', p..'session:'..id, p..'fence:'..id)
  redis.call('ZREM', p..'all', id)
end
redis.call('ZREMRANGEBYSCORE', p..'revoked', '-inf', ARGV[2])
return #ids
`,

  // ARGV: prefix, now. Live sessions by mode (those past their absolute end not counted).
  ghCount: `
local p, now = ARGV[1], ARGV[2]
return {
  redis.call('ZCOUNT', p..'mode:keycloak', '('..now, '+inf'),
  redis.call('ZCOUNT', p..'mode:cached', '('..now, '+inf'),
  redis.call('ZCOUNT', p..'mode:local', '('..now, '+inf')
}
`,

  // ARGV: prefix, now, graceMs. Token sets fresh or cached inside the grace period.
  ghUsable: `
local p, now = ARGV[1], tonumber(ARGV[2])
local since = now - tonumber(ARGV[3])
local n = redis.call('ZCOUNT', p..'tok:cached', '('..since, '+inf')
for _, id in ipairs(redis.call('ZRANGEBYSCORE', p..'tok:access', '('..now, '+inf')) do
  local cached = redis.call('ZSCORE', p..'tok:cached', id)
  if cached and tonumber(cached) <= since then n = n + 1 end
end
return n
`,

  // ARGV: prefix, now, graceMs. Drops token sets expired and past the grace period; returns how many.
  ghCleanupTokens: `
local p, now = ARGV[1], tonumber(ARGV[2])
local n = 0
for _, id in ipairs(redis.call('ZRANGEBYSCORE', p..'tok:cached', '-inf', now - tonumber(ARGV[3]))) do
  local access = tonumber(redis.call('ZSCORE', p..'tok:access', id) or '0')
  if access <= now then
    redis.call('HDEL', p..'session:'..id, 'tok')
    redis.call('ZREM', p..'tok:access', id)
    redis.call('ZREM', p..'tok:cached', id)
    redis.call('ZREM', p..'tok:refresh', id)
    n = n + 1
  end
end
return n
`,

  // ARGV: prefix, user (lower case, '' for none), ip ('' for none), now, since, maxFailures,
  // lockoutMs, windowMs. Checks the lockout and records the attempt, in one step.
  // Returns {0, seconds} when locked, {1, sequence} when reserved.
  ghReserve: `
local p, user, ip, now, since = ARGV[1], ARGV[2], ARGV[3], tonumber(ARGV[4]), ARGV[5]
local max, lockout, window = tonumber(ARGV[6]), tonumber(ARGV[7]), tonumber(ARGV[8])
local keys = {}
if user ~= '' then table.insert(keys, p..'att:u:'..user) end
if ip ~= '' then table.insert(keys, p..'att:ip:'..ip) end
local untilAt = 0
for _, key in ipairs(keys) do
  redis.call('ZREMRANGEBYSCORE', key, '-inf', since)
  if redis.call('ZCARD', key) >= max then
    local last = redis.call('ZRANGE', key, -1, -1, 'WITHSCORES')
    untilAt = math.max(untilAt, tonumber(last[2]) + lockout)
  end
end
if untilAt > now then return { 0, math.ceil((untilAt - now) / 1000) } end
local seq = redis.call('INCR', p..'att:seq')
for _, key in ipairs(keys) do
  redis.call('ZADD', key, now, seq)
  redis.call('PEXPIRE', key, window)
end
return { 1, seq }
`,

  // ARGV: prefix, user, ip, sequence, result. success: the user's failures up to it stop
  // counting, and it is no failure of the address; void: forgotten; failure: stays.
  ghSettle: `
local p, user, ip, seq, result = ARGV[1], ARGV[2], ARGV[3], tonumber(ARGV[4]), ARGV[5]
if result == 'failure' then return 0 end
if ip ~= '' then redis.call('ZREM', p..'att:ip:'..ip, ARGV[4]) end
if user ~= '' then
  local key = p..'att:u:'..user
  if result == 'void' then
    redis.call('ZREM', key, ARGV[4])
  else
    for _, member in ipairs(redis.call('ZRANGE', key, 0, -1)) do
      if tonumber(member) <= seq then redis.call('ZREM', key, member) end
    end
  end
end
return 1
`,

  // ARGV: prefix, user, ip, since. {count, latest} of the user, then of the address (latest -1: none).
  ghFailures: `
local p, user, ip, since = ARGV[1], ARGV[2], ARGV[3], ARGV[4]
local out = {}
local function window(key)
  local count = redis.call('ZCOUNT', key, '('..since, '+inf')
  local latest = -1
  if count > 0 then latest = tonumber(redis.call('ZRANGE', key, -1, -1, 'WITHSCORES')[2]) end
  table.insert(out, count)
  table.insert(out, latest)
end
window(p..'att:u:'..user)
if ip ~= '' then window(p..'att:ip:'..ip) end
return out
`,

  // ARGV: prefix, id, ttlMs. The next fence when the lock was free (the session must be live),
  // else 0.
  ghLock: `
local p, id = ARGV[1], ARGV[2]
local key = p..'session:'..id
if redis.call('EXISTS', key) == 0 or redis.call('HEXISTS', key, 'ended') == 1 then return 0 end
if redis.call('EXISTS', p..'lock:'..id) == 1 then return 0 end
local fence = redis.call('INCR', p..'fence:'..id)
redis.call('PEXPIREAT', p..'fence:'..id, redis.call('HGET', key, 'exp'))
redis.call('SET', p..'lock:'..id, fence, 'PX', ARGV[3])
return fence
`,

  // ARGV: prefix, user, kind, queuedAt, leaseMs, owner. A user's replay turn across replicas:
  // 'busy' (another owner holds the user's lease), 'superseded' (a newer write of this kind was
  // replayed), else 'apply' (the lease is taken and this write's time recorded).
  ghSyncBegin: `
local p, user, kind, at, lease, owner = ARGV[1], ARGV[2], ARGV[3], tonumber(ARGV[4]), ARGV[5], ARGV[6]
local lock = p..'sync:lease:'..user
local holder = redis.call('GET', lock)
if holder and holder ~= owner then return 'busy' end
local marks = p..'sync:replayed:'..user
local last = tonumber(redis.call('HGET', marks, kind) or '-1')
if last > at then return 'superseded' end
redis.call('SET', lock, owner, 'PX', lease)
redis.call('HSET', marks, kind, ARGV[4])
redis.call('PEXPIRE', marks, 2592000000)
return 'apply'
`,

  // ARGV: prefix, user, owner. Gives the user's replay lease back.
  ghSyncEnd: `
local lock = ARGV[1]..'sync:lease:'..ARGV[2]
if redis.call('GET', lock) == ARGV[3] then return redis.call('DEL', lock) end
return 0
`,

  // ARGV: prefix, id, fence. Frees the lock if this fence still holds it.
  ghUnlock: `
local key = ARGV[1]..'lock:'..ARGV[2]
if redis.call('GET', key) == ARGV[3] then return redis.call('DEL', key) end
return 0
`
,

  // ARGV: prefix, name, record JSON, expected rev ('' to merge). Stores one service-token
  // record and publishes it. With an expected rev (a create, rotate or revoke made against the
  // copy read just before): only if Redis' rev is still that (0: no record), else 'conflict'.
  // Without: merged (MERGE_TOKEN), for a replay or a push-back after Redis lost its data.
  // Returns { 'written' | 'kept' | 'conflict', Redis' record JSON or '' }.
  ghTokenPut: `${MERGE_TOKEN}
local p, name, json, expected = ARGV[1], ARGV[2], ARGV[3], ARGV[4]
local key = p..'service-tokens'
local stored = redis.call('HGET', key, name)
local cur = nil
if stored then cur = cjson.decode(stored) end
local out
if expected ~= '' then
  local rev = 0
  if cur ~= nil then rev = cur.rev end
  if rev ~= tonumber(expected) then return { 'conflict', stored or '' } end
  out = json
else
  local winner, changed = merge_token(cur, cjson.decode(json))
  if not changed then return { 'kept', stored } end
  if winner == cur then out = cjson.encode(winner) else out = json end
end
redis.call('HSET', key, name, out)
redis.call('PUBLISH', p..'service-tokens', '{"records":['..out..'],"deleted":[]}')
return { 'written', out }
`,

  // ARGV: prefix, now, purgeBefore. As 'tokens cleanup': previous tokens past their grace are
  // forgotten; tokens revoked, or expired, before purgeBefore deleted. Publishes the change and
  // returns { previousCleared, purged, message JSON }.
  ghTokenCleanup: `
local p, now, before = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3])
local key = p..'service-tokens'
local all = redis.call('HGETALL', key)
local records, deleted = {}, {}
local cleared, purged = 0, 0
for i = 1, #all, 2 do
  local name, r = all[i], cjson.decode(all[i + 1])
  if (r.revoked_at ~= nil and r.revoked_at < before) or (r.revoked_at == nil and r.expires_at < before) then
    redis.call('HDEL', key, name)
    table.insert(deleted, cjson.encode({ name = name, created_at = r.created_at }))
    purged = purged + 1
  elseif r.previous_id ~= nil and r.previous_valid_until ~= nil and r.previous_valid_until <= now then
    r.previous_id = nil
    r.previous_hash = nil
    r.previous_valid_until = nil
    r.rev = r.rev + 1
    local out = cjson.encode(r)
    redis.call('HSET', key, name, out)
    table.insert(records, out)
    cleared = cleared + 1
  end
end
local message = '{"records":['..table.concat(records, ',')..'],"deleted":['..table.concat(deleted, ',')..']}'
if cleared + purged > 0 then redis.call('PUBLISH', p..'service-tokens', message) end
return { cleared, purged, message }
`
} as const

/** The command names of {@link SCRIPTS}. */
export type ScriptName = keyof typeof SCRIPTS
