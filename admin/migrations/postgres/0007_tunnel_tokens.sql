-- Desktop tunnel tokens already used, so that a token is used once across every gateway process
-- sharing this database. Same table as ../sqlite/0007_tunnel_tokens.sql. Rows are forgotten once
-- the token has expired (it is refused by its expiry then).
CREATE TABLE tunnel_tokens_used (
    jti        TEXT   NOT NULL PRIMARY KEY,
    expires_at BIGINT NOT NULL
);
CREATE INDEX tunnel_tokens_used_expiry ON tunnel_tokens_used (expires_at);
