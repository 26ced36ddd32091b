-- Idle handling, warm pools and group quotas. Same columns as ../postgres/0005_pools_idle_quotas.sql.

-- What the reaper does with an instance idle longer than its timeout: stop it (it can be woken)
-- or destroy it (the profile volume stays).
ALTER TABLE droplets ADD COLUMN idle_action TEXT NOT NULL DEFAULT 'stop' CHECK (idle_action IN ('stop', 'destroy'));
-- Warm pool containers are started and ready ahead (1) or only created (0).
ALTER TABLE droplets ADD COLUMN pool_started INTEGER NOT NULL DEFAULT 0 CHECK (pool_started IN (0, 1));

-- Instances the members of a group may hold together; NULL = no group limit.
ALTER TABLE groups ADD COLUMN max_instances INTEGER CHECK (max_instances IS NULL OR max_instances >= 0);

-- Containers created ahead for a droplet's warm pool, not yet anyone's. A launch turns one into
-- an instance (same slug, same container) in the transaction that admits the instance, so a
-- container is always claimed by exactly one row of this table or of `instances`. Deleting the
-- droplet drops its rows; reconciliation then removes the containers as orphans.
CREATE TABLE pool_containers (
    id              INTEGER PRIMARY KEY AUTOINCREMENT,
    droplet_id      INTEGER NOT NULL REFERENCES droplets (id) ON DELETE CASCADE,
    slug            TEXT    NOT NULL UNIQUE,
    -- creating: reserved, container being made; ready: can be handed out.
    status          TEXT    NOT NULL CHECK (status IN ('creating', 'ready')),
    -- Started (and found ready) ahead; counts against host capacity.
    started         INTEGER NOT NULL DEFAULT 0 CHECK (started IN (0, 1)),
    -- The droplet's updated_at when the container was made: a changed droplet drains its pool.
    droplet_version INTEGER NOT NULL,
    container_id    TEXT,
    container_name  TEXT,
    upstream        TEXT,
    -- Sealed desktop password given to the container (purpose "instance-credentials").
    credentials     TEXT,
    created_at      INTEGER NOT NULL
);
CREATE INDEX pool_containers_droplet ON pool_containers (droplet_id, status);
