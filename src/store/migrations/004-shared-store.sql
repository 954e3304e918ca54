-- Issue 14: the session-store contract.
-- The refresh lock of each session, with its fencing token: `fence` only ever grows (the row
-- stays after a release, `expires_at` 0), and the session remembers the largest fence that
-- wrote to it, so a holder whose lease ran out cannot overwrite a later holder's tokens.
CREATE TABLE refresh_locks (
  session_id TEXT PRIMARY KEY REFERENCES sessions (id) ON DELETE CASCADE,
  fence INTEGER NOT NULL,
  expires_at INTEGER NOT NULL
);
ALTER TABLE sessions ADD COLUMN fence INTEGER NOT NULL DEFAULT 0;

-- With store.sessions redis: what this replica (or a CLI on its file) wrote while Redis was
-- unreachable, replayed in order when it is back. Every operation is idempotent (an end ends
-- nothing twice, an upsert never brings an ended session back), so a replay cut short and run
-- again does no harm; `lease_until` keeps two processes on one file from replaying an entry at once.
CREATE TABLE store_outbox (
  seq INTEGER PRIMARY KEY,
  operation TEXT NOT NULL CHECK (operation IN ('upsert', 'end', 'end_where')),
  payload TEXT NOT NULL,
  created_at INTEGER NOT NULL,
  lease_until INTEGER NOT NULL DEFAULT 0
);
