-- Registry credentials of container droplets: the account an image is pulled with. Same as
-- ../sqlite/0009_registry_credentials.sql. The username and password are sealed together
-- with the key file (AES-256-GCM, purpose "registry-credentials:<droplet id>", key id in front):
-- never in clear in the database.
CREATE TABLE droplet_registry_credentials (
    droplet_id BIGINT NOT NULL PRIMARY KEY REFERENCES droplets (id) ON DELETE CASCADE,
    sealed     BYTEA  NOT NULL,
    updated_at BIGINT NOT NULL
);
