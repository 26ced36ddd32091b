-- Flowcase Gateway schema, SQLite dialect.
--
-- Keep this file and ../postgres/0001_initial_schema.sql in lockstep: same tables, columns,
-- constraints and indexes; only the type names differ. The Rust side reads both through
-- sqlx's Any driver, so:
--   * ids and timestamps are INTEGER here / BIGINT there (unix milliseconds, i64);
--   * booleans are INTEGER 0/1 here / SMALLINT 0/1 there, because the Any driver cannot decode
--     a SQLite BOOLEAN column at all and cannot decode a PostgreSQL BOOLEAN as an integer;
--   * no floating-point columns (CPU limits are integer millicores): sqlx 0.9.0's Any driver
--     declares a NULL f64 parameter as float4 on PostgreSQL (sqlx issue #4284), which breaks
--     the statement cached on that connection for the next non-NULL value;
--   * "may not delete while referenced" is ON DELETE NO ACTION, not RESTRICT: for immediate
--     constraints they behave alike, but SQLite reports RESTRICT with a trigger error code that
--     sqlx does not classify as a foreign-key violation;
--   * ids use AUTOINCREMENT so a deleted row's id is never handed out again (droplet profile
--     paths embed {user_id}; a reused id would give a new user someone else's home directory).

CREATE TABLE tenants (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    name        TEXT    NOT NULL UNIQUE,
    is_default  INTEGER NOT NULL DEFAULT 0 CHECK (is_default IN (0, 1)),
    created_at  INTEGER NOT NULL
);
-- At most one default tenant.
CREATE UNIQUE INDEX tenants_one_default ON tenants (is_default) WHERE is_default = 1;

CREATE TABLE users (
    id             INTEGER PRIMARY KEY AUTOINCREMENT,
    tenant_id      INTEGER NOT NULL REFERENCES tenants (id) ON DELETE NO ACTION,
    -- Stored case-folded by the application, so uniqueness and login lookups are
    -- case-insensitive with identical semantics on both backends.
    username       TEXT    NOT NULL UNIQUE,
    email          TEXT    UNIQUE,
    -- NULL for external (SSO) accounts, which cannot log in with a password.
    password_hash  TEXT,
    display_name   TEXT    NOT NULL DEFAULT '',
    external       INTEGER NOT NULL DEFAULT 0 CHECK (external IN (0, 1)),
    disabled       INTEGER NOT NULL DEFAULT 0 CHECK (disabled IN (0, 1)),
    protected      INTEGER NOT NULL DEFAULT 0 CHECK (protected IN (0, 1)),
    created_at     INTEGER NOT NULL,
    updated_at     INTEGER NOT NULL
);
CREATE INDEX users_tenant ON users (tenant_id);

CREATE TABLE groups (
    id              INTEGER PRIMARY KEY AUTOINCREMENT,
    tenant_id       INTEGER NOT NULL REFERENCES tenants (id) ON DELETE NO ACTION,
    name            TEXT    NOT NULL,
    description     TEXT    NOT NULL DEFAULT '',
    admin_panel     INTEGER NOT NULL DEFAULT 0 CHECK (admin_panel IN (0, 1)),
    view_users      INTEGER NOT NULL DEFAULT 0 CHECK (view_users IN (0, 1)),
    edit_users      INTEGER NOT NULL DEFAULT 0 CHECK (edit_users IN (0, 1)),
    view_groups     INTEGER NOT NULL DEFAULT 0 CHECK (view_groups IN (0, 1)),
    edit_groups     INTEGER NOT NULL DEFAULT 0 CHECK (edit_groups IN (0, 1)),
    view_droplets   INTEGER NOT NULL DEFAULT 0 CHECK (view_droplets IN (0, 1)),
    edit_droplets   INTEGER NOT NULL DEFAULT 0 CHECK (edit_droplets IN (0, 1)),
    view_instances  INTEGER NOT NULL DEFAULT 0 CHECK (view_instances IN (0, 1)),
    edit_instances  INTEGER NOT NULL DEFAULT 0 CHECK (edit_instances IN (0, 1)),
    view_workshops  INTEGER NOT NULL DEFAULT 0 CHECK (view_workshops IN (0, 1)),
    edit_workshops  INTEGER NOT NULL DEFAULT 0 CHECK (edit_workshops IN (0, 1)),
    view_registry   INTEGER NOT NULL DEFAULT 0 CHECK (view_registry IN (0, 1)),
    edit_registry   INTEGER NOT NULL DEFAULT 0 CHECK (edit_registry IN (0, 1)),
    view_tenants    INTEGER NOT NULL DEFAULT 0 CHECK (view_tenants IN (0, 1)),
    edit_tenants    INTEGER NOT NULL DEFAULT 0 CHECK (edit_tenants IN (0, 1)),
    created_at      INTEGER NOT NULL,
    UNIQUE (tenant_id, name)
);

CREATE TABLE memberships (
    user_id   INTEGER NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    group_id  INTEGER NOT NULL REFERENCES groups (id) ON DELETE CASCADE,
    PRIMARY KEY (user_id, group_id)
);
CREATE INDEX memberships_group ON memberships (group_id);

CREATE TABLE droplets (
    id                     INTEGER PRIMARY KEY AUTOINCREMENT,
    tenant_id              INTEGER NOT NULL REFERENCES tenants (id) ON DELETE NO ACTION,
    name                   TEXT    NOT NULL,
    description            TEXT    NOT NULL DEFAULT '',
    droplet_type           TEXT    NOT NULL CHECK (droplet_type IN ('http', 'vnc', 'rdp', 'ssh')),
    target                 TEXT    NOT NULL CHECK (target IN ('container', 'external')),
    image                  TEXT,
    registry               TEXT,
    cpu_millicores         INTEGER,
    memory_mb              INTEGER,
    ports_json             TEXT    NOT NULL DEFAULT '[]',
    env_json               TEXT    NOT NULL DEFAULT '{}',
    labels_json            TEXT    NOT NULL DEFAULT '{}',
    profile_path           TEXT,
    network                TEXT,
    idle_timeout_secs      INTEGER,
    max_lifetime_secs      INTEGER,
    pool_size              INTEGER NOT NULL DEFAULT 0,
    icon                   TEXT,
    active                 INTEGER NOT NULL DEFAULT 1 CHECK (active IN (0, 1)),
    external_host          TEXT,
    external_port          INTEGER,
    external_username      TEXT,
    -- Sealed by the application; the database never sees the plaintext.
    external_credentials   BLOB,
    created_at             INTEGER NOT NULL,
    updated_at             INTEGER NOT NULL,
    UNIQUE (tenant_id, name)
);

CREATE TABLE droplet_groups (
    droplet_id  INTEGER NOT NULL REFERENCES droplets (id) ON DELETE CASCADE,
    group_id    INTEGER NOT NULL REFERENCES groups (id) ON DELETE CASCADE,
    PRIMARY KEY (droplet_id, group_id)
);
CREATE INDEX droplet_groups_group ON droplet_groups (group_id);

-- Instances block deletion of their droplet and user: a row may stand for a live container, and
-- dropping it silently would leave that container running with nobody accounting for it. The
-- orchestrator destroys the container and deletes the row first.
CREATE TABLE instances (
    id                 INTEGER PRIMARY KEY AUTOINCREMENT,
    slug               TEXT    NOT NULL UNIQUE,
    droplet_id         INTEGER NOT NULL REFERENCES droplets (id) ON DELETE NO ACTION,
    user_id            INTEGER NOT NULL REFERENCES users (id) ON DELETE NO ACTION,
    status             TEXT    NOT NULL CHECK (status IN ('requested', 'creating', 'starting',
                           'running', 'stopping', 'stopped', 'destroying', 'gone', 'error')),
    error_reason       TEXT,
    container_id       TEXT,
    container_name     TEXT,
    upstream           TEXT,
    created_at         INTEGER NOT NULL,
    started_at         INTEGER,
    stopped_at         INTEGER,
    last_activity_at   INTEGER
);
CREATE INDEX instances_user ON instances (user_id);
CREATE INDEX instances_status ON instances (status);
CREATE INDEX instances_droplet ON instances (droplet_id);

CREATE TABLE sessions (
    -- Hash of the cookie token: a leaked database does not yield usable cookies.
    id                   TEXT    PRIMARY KEY,
    user_id              INTEGER NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    created_at           INTEGER NOT NULL,
    last_seen_at         INTEGER NOT NULL,
    idle_expires_at      INTEGER NOT NULL,
    absolute_expires_at  INTEGER NOT NULL,
    remember             INTEGER NOT NULL DEFAULT 0 CHECK (remember IN (0, 1)),
    client_addr          TEXT,
    user_agent           TEXT,
    revoked_at           INTEGER
);
CREATE INDEX sessions_user ON sessions (user_id);

CREATE TABLE api_keys (
    id            INTEGER PRIMARY KEY AUTOINCREMENT,
    user_id       INTEGER NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    name          TEXT    NOT NULL,
    secret_hash   TEXT    NOT NULL UNIQUE,
    prefix        TEXT    NOT NULL,
    created_at    INTEGER NOT NULL,
    last_used_at  INTEGER,
    expires_at    INTEGER,
    revoked_at    INTEGER
);
CREATE INDEX api_keys_user ON api_keys (user_id);

-- The log outlives its actors: deleting a user keeps their entries (actor_name keeps the name).
CREATE TABLE audit_log (
    id             INTEGER PRIMARY KEY AUTOINCREMENT,
    at             INTEGER NOT NULL,
    actor_user_id  INTEGER REFERENCES users (id) ON DELETE SET NULL,
    actor_name     TEXT,
    action         TEXT    NOT NULL,
    target_kind    TEXT,
    target_id      TEXT,
    client_addr    TEXT,
    details_json   TEXT    NOT NULL DEFAULT '{}'
);
CREATE INDEX audit_log_at ON audit_log (at);
CREATE INDEX audit_log_actor ON audit_log (actor_user_id);

CREATE TABLE workshops (
    id           INTEGER PRIMARY KEY AUTOINCREMENT,
    tenant_id    INTEGER NOT NULL REFERENCES tenants (id) ON DELETE NO ACTION,
    group_id     INTEGER REFERENCES groups (id) ON DELETE SET NULL,
    name         TEXT    NOT NULL,
    description  TEXT    NOT NULL DEFAULT '',
    starts_at    INTEGER NOT NULL,
    ends_at      INTEGER NOT NULL,
    status       TEXT    NOT NULL CHECK (status IN ('scheduled', 'running', 'ended', 'cancelled')),
    created_at   INTEGER NOT NULL,
    UNIQUE (tenant_id, name)
);

CREATE TABLE workshop_participants (
    workshop_id  INTEGER NOT NULL REFERENCES workshops (id) ON DELETE CASCADE,
    user_id      INTEGER NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    instance_id  INTEGER REFERENCES instances (id) ON DELETE SET NULL,
    joined_at    INTEGER NOT NULL,
    PRIMARY KEY (workshop_id, user_id)
);
CREATE INDEX workshop_participants_user ON workshop_participants (user_id);

CREATE TABLE workshop_droplets (
    workshop_id  INTEGER NOT NULL REFERENCES workshops (id) ON DELETE CASCADE,
    droplet_id   INTEGER NOT NULL REFERENCES droplets (id) ON DELETE CASCADE,
    PRIMARY KEY (workshop_id, droplet_id)
);
CREATE INDEX workshop_droplets_droplet ON workshop_droplets (droplet_id);
