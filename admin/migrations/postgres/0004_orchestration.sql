-- Orchestrator fields. Same columns as ../sqlite/0004_orchestration.sql.

-- Container hardening and readiness, per droplet.
-- Linux capabilities added back after dropping all of them (JSON array, e.g. ["NET_BIND_SERVICE"]).
ALTER TABLE droplets ADD COLUMN cap_add_json TEXT NOT NULL DEFAULT '[]';
ALTER TABLE droplets ADD COLUMN read_only_root SMALLINT NOT NULL DEFAULT 0 CHECK (read_only_root IN (0, 1));
-- Maximum number of processes in the container; NULL = the orchestrator's default.
ALTER TABLE droplets ADD COLUMN pids_limit BIGINT;
-- HTTP droplets: the path that must answer (status < 500) before the instance counts as ready.
ALTER TABLE droplets ADD COLUMN health_path TEXT;
-- Where the persistent profile volume is mounted inside the container; NULL = no profile.
ALTER TABLE droplets ADD COLUMN profile_mount TEXT;

-- The per-instance desktop password, sealed with the key file (purpose "instance-credentials").
ALTER TABLE instances ADD COLUMN credentials TEXT;
