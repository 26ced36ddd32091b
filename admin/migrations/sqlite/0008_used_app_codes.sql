-- One-time instance-host codes already redeemed, so that a code works once across every gateway
-- process sharing this database. Same table as ../postgres/0008_used_app_codes.sql.
-- Rows are useless once the code has expired (it is refused anyway) and are pruned.
CREATE TABLE used_app_codes (
    jti        TEXT    PRIMARY KEY,
    expires_at INTEGER NOT NULL
);
CREATE INDEX used_app_codes_expiry ON used_app_codes (expires_at);
