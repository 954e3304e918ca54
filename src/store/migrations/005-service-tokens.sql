-- Service tokens (issue 16): Gatehouse's own credentials for machine clients. One row per
-- name. Each token generation has a public identifier (the lookup key, printed by
-- `tokens list`) and the SHA-256 of the whole token; the token itself is never stored.
-- After a rotation the previous generation stays valid until previous_valid_until (the
-- grace period). Times are milliseconds since the epoch.
CREATE TABLE service_tokens (
  name TEXT PRIMARY KEY,
  roles TEXT NOT NULL DEFAULT '[]',
  description TEXT,
  created_at INTEGER NOT NULL,
  -- Lifetime of each generation, in days: a rotation gives the new token as long.
  lifetime_days INTEGER NOT NULL,
  expires_at INTEGER NOT NULL,
  current_id TEXT NOT NULL UNIQUE,
  current_hash BLOB NOT NULL,
  current_created_at INTEGER NOT NULL,
  current_last_used_at INTEGER,
  previous_id TEXT UNIQUE,
  previous_hash BLOB,
  previous_valid_until INTEGER,
  previous_last_used_at INTEGER,
  rotated_at INTEGER,
  -- Rotate automatically this many days before expiry; NULL: never.
  auto_rotate_days INTEGER,
  revoked_at INTEGER,
  CHECK ((previous_id IS NULL) = (previous_hash IS NULL))
);
