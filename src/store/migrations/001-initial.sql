-- Gatehouse schema, version 1. Timestamps are integer milliseconds since the Unix epoch.
-- Secrets at rest (DESIGN §3): session secrets and reset tokens are stored as SHA-256 only;
-- tokens and queued passwords are stored encrypted (AES-256-GCM, columns ending in _enc).

CREATE TABLE users (
  id INTEGER PRIMARY KEY,
  username TEXT NOT NULL UNIQUE COLLATE NOCASE,
  email TEXT,
  first_name TEXT,
  last_name TEXT,
  -- scrypt, with its parameters, so they can be raised later: scrypt$N$r$p$salt$hash
  password_hash TEXT,
  roles TEXT NOT NULL DEFAULT '[]',
  groups TEXT NOT NULL DEFAULT '[]',
  enabled INTEGER NOT NULL DEFAULT 1 CHECK (enabled IN (0, 1)),
  -- local: the app's own user; keycloak: a cached credential of a Keycloak user (auth.primary: keycloak)
  source TEXT NOT NULL DEFAULT 'local' CHECK (source IN ('local', 'keycloak')),
  keycloak_id TEXT,
  credential_expires_at INTEGER,
  password_changed_at INTEGER,
  created_at INTEGER NOT NULL,
  updated_at INTEGER NOT NULL
);
CREATE INDEX users_keycloak_id ON users (keycloak_id);

CREATE TABLE sessions (
  id TEXT PRIMARY KEY,
  secret_hash BLOB NOT NULL UNIQUE,
  username TEXT NOT NULL,
  subject TEXT,
  auth_mode TEXT NOT NULL CHECK (auth_mode IN ('keycloak', 'cached', 'local')),
  keycloak_sid TEXT,
  identity TEXT NOT NULL DEFAULT '{}',
  ip TEXT,
  user_agent TEXT,
  created_at INTEGER NOT NULL,
  last_seen_at INTEGER NOT NULL,
  expires_at INTEGER NOT NULL,
  ended_at INTEGER,
  end_reason TEXT
);
CREATE INDEX sessions_username ON sessions (username);
CREATE INDEX sessions_keycloak_sid ON sessions (keycloak_sid);
CREATE INDEX sessions_expires_at ON sessions (expires_at);

CREATE TABLE token_cache (
  session_id TEXT PRIMARY KEY REFERENCES sessions (id) ON DELETE CASCADE,
  username TEXT NOT NULL,
  access_token_enc BLOB NOT NULL,
  refresh_token_enc BLOB,
  id_token_enc BLOB,
  access_expires_at INTEGER NOT NULL,
  refresh_expires_at INTEGER,
  cached_at INTEGER NOT NULL,
  refreshed_at INTEGER,
  last_used_at INTEGER,
  use_count INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX token_cache_username ON token_cache (username);
CREATE INDEX token_cache_access_expires_at ON token_cache (access_expires_at);

CREATE TABLE jwks_cache (
  issuer TEXT PRIMARY KEY,
  jwks TEXT NOT NULL,
  fetched_at INTEGER NOT NULL,
  server TEXT
);

CREATE TABLE sync_queue (
  id TEXT PRIMARY KEY,
  username TEXT NOT NULL,
  operation TEXT NOT NULL,
  payload TEXT NOT NULL DEFAULT '{}',
  payload_enc BLOB,
  priority INTEGER NOT NULL DEFAULT 5,
  status TEXT NOT NULL DEFAULT 'pending' CHECK (status IN ('pending', 'processing', 'done', 'failed', 'dead')),
  attempts INTEGER NOT NULL DEFAULT 0,
  next_attempt_at INTEGER NOT NULL,
  queued_at INTEGER NOT NULL,
  processed_at INTEGER,
  last_error TEXT,
  lease_owner TEXT,
  lease_expires_at INTEGER
);
CREATE INDEX sync_queue_claim ON sync_queue (status, priority, next_attempt_at);
CREATE INDEX sync_queue_user ON sync_queue (username, status);

CREATE TABLE login_attempts (
  id INTEGER PRIMARY KEY,
  username TEXT,
  ip TEXT,
  channel TEXT NOT NULL,
  succeeded INTEGER NOT NULL CHECK (succeeded IN (0, 1)),
  attempted_at INTEGER NOT NULL
);
CREATE INDEX login_attempts_user ON login_attempts (username, attempted_at);
CREATE INDEX login_attempts_ip ON login_attempts (ip, attempted_at);

CREATE TABLE password_reset_tokens (
  token_hash BLOB PRIMARY KEY,
  username TEXT NOT NULL,
  created_at INTEGER NOT NULL,
  expires_at INTEGER NOT NULL,
  used_at INTEGER
);
CREATE INDEX password_reset_tokens_username ON password_reset_tokens (username);

CREATE TABLE audit_log (
  id INTEGER PRIMARY KEY,
  at INTEGER NOT NULL,
  actor TEXT,
  action TEXT NOT NULL,
  result TEXT NOT NULL,
  auth_mode TEXT,
  reason TEXT,
  ip TEXT,
  detail TEXT NOT NULL DEFAULT '{}'
);
CREATE INDEX audit_log_at ON audit_log (at);
CREATE INDEX audit_log_actor ON audit_log (actor, at);

-- Small facts that outlive a restart: the last good Keycloak metadata, readiness probe writes.
CREATE TABLE meta (
  key TEXT PRIMARY KEY,
  value TEXT NOT NULL,
  updated_at INTEGER NOT NULL
);
