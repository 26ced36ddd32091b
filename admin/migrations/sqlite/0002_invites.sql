-- Invitation codes for `auth.registration = "invite"`. Same table as ../postgres/0002_invites.sql.
-- The code itself is never stored, only its SHA-256 digest.
CREATE TABLE invites (
    id           INTEGER PRIMARY KEY AUTOINCREMENT,
    code_hash    TEXT    NOT NULL UNIQUE,
    tenant_id    INTEGER NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    group_id     INTEGER REFERENCES groups (id) ON DELETE SET NULL,
    created_by   INTEGER REFERENCES users (id) ON DELETE SET NULL,
    note         TEXT    NOT NULL DEFAULT '',
    max_uses     INTEGER NOT NULL DEFAULT 1 CHECK (max_uses >= 1),
    uses         INTEGER NOT NULL DEFAULT 0,
    created_at   INTEGER NOT NULL,
    expires_at   INTEGER,
    revoked_at   INTEGER
);
CREATE INDEX invites_tenant ON invites (tenant_id);
