-- Whether a session's person proved a password Gatehouse holds (a local user, or a cached
-- credential): such a session may go on in mode local when its Keycloak part ends; a session
-- that only Keycloak vouched for must log in again.
ALTER TABLE sessions ADD COLUMN local_basis INTEGER NOT NULL DEFAULT 0 CHECK (local_basis IN (0, 1));
