-- Service tokens shared by replicas (issue 16, store.sessions redis). Redis holds the shared
-- copy of every token record (hashes only); this table is each replica's mirror of it, so a
-- check stays a local lookup and keeps working while Redis is away.
-- `rev` grows with every change of a record (a rotation, a revoke...): of two copies of one
-- token (same name and created_at), the one with the larger rev is the newer, and a revoked
-- copy always wins. `shared_pending` is 1 while a change made here has not reached Redis yet
-- (it was unreachable): it is merged into Redis when Redis is back, never dropped.
ALTER TABLE service_tokens ADD COLUMN rev INTEGER NOT NULL DEFAULT 0;
ALTER TABLE service_tokens ADD COLUMN shared_pending INTEGER NOT NULL DEFAULT 0;
