-- Desktop tunnel tokens already used, so that a token is used once across every gateway process
-- sharing this database. Same as ../postgres/0007_desktop_tunnels.sql. Rows are forgotten once
-- the token has expired (it is refused by its expiry then).
CREATE TABLE tunnel_tokens_used (
    jti        TEXT    NOT NULL PRIMARY KEY,
    expires_at INTEGER NOT NULL
);
CREATE INDEX tunnel_tokens_used_expiry ON tunnel_tokens_used (expires_at);

-- Clipboard restrictions of a group's members in desktops (guacd's disable-copy/disable-paste).
-- Restrictions, not rights: a member of any restricting group is restricted.
ALTER TABLE groups ADD COLUMN disable_copy INTEGER NOT NULL DEFAULT 0 CHECK (disable_copy IN (0, 1));
ALTER TABLE groups ADD COLUMN disable_paste INTEGER NOT NULL DEFAULT 0 CHECK (disable_paste IN (0, 1));
