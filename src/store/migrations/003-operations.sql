-- Issue 15: operations. Alert state that outlives a restart, password reset requests, and when
-- a sync item last failed (the "failed syncs in the last hour" alert and doctor check).

-- One row per alert instance (`circuit_open:http://kc-1:8080`, `sync_queue`...): whether it is
-- firing and when it was last sent, so a restart (a deploy) neither repeats nor forgets it.
CREATE TABLE alert_state (
  key TEXT PRIMARY KEY,
  alert TEXT NOT NULL,
  state TEXT NOT NULL CHECK (state IN ('firing', 'resolved')),
  severity TEXT NOT NULL CHECK (severity IN ('warning', 'critical')),
  summary TEXT NOT NULL,
  -- When it started firing, or when it resolved.
  since INTEGER NOT NULL,
  last_sent_at INTEGER,
  updated_at INTEGER NOT NULL
);

-- Every firing and resolution, for the daily digest.
CREATE TABLE alert_events (
  id INTEGER PRIMARY KEY,
  at INTEGER NOT NULL,
  key TEXT NOT NULL,
  alert TEXT NOT NULL,
  state TEXT NOT NULL CHECK (state IN ('firing', 'resolved')),
  severity TEXT NOT NULL,
  summary TEXT NOT NULL
);
CREATE INDEX alert_events_at ON alert_events (at);

-- Reset requests, counted per identifier typed (lower-cased) and per client address, for the
-- rate limit. Recorded whether or not the identifier names a user.
CREATE TABLE password_reset_requests (
  id INTEGER PRIMARY KEY,
  identifier TEXT NOT NULL,
  ip TEXT,
  requested_at INTEGER NOT NULL
);
CREATE INDEX password_reset_requests_identifier ON password_reset_requests (identifier, requested_at);
CREATE INDEX password_reset_requests_ip ON password_reset_requests (ip, requested_at);

ALTER TABLE sync_queue ADD COLUMN last_failed_at INTEGER;
CREATE INDEX sync_queue_last_failed_at ON sync_queue (last_failed_at);
