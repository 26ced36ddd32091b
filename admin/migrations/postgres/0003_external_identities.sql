-- Accounts linked to an OpenID Connect provider, and the provider tokens of a session opened
-- through one. Same as ../sqlite/0003_external_identities.sql.
CREATE TABLE external_identities (
    provider       TEXT   NOT NULL,
    subject        TEXT   NOT NULL,
    user_id        BIGINT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    created_at     BIGINT NOT NULL,
    last_login_at  BIGINT NOT NULL,
    PRIMARY KEY (provider, subject)
);
CREATE INDEX external_identities_user ON external_identities (user_id);

-- Provider id, the sealed refresh and ID tokens (never stored in clear), and when the access
-- token expires, i.e. when the session must be checked with the provider again.
ALTER TABLE sessions ADD COLUMN oidc_provider TEXT;
ALTER TABLE sessions ADD COLUMN oidc_tokens TEXT;
ALTER TABLE sessions ADD COLUMN oidc_refresh_at BIGINT;
