-- Registry credentials of container droplets: the account an image is pulled with. Same as
-- ../postgres/0009_registry_credentials.sql. The username and password are sealed together
-- with the key file (AES-256-GCM, purpose "registry-credentials:<droplet id>", key id in front):
-- never in clear in the database.
CREATE TABLE droplet_registry_credentials (
    droplet_id INTEGER NOT NULL PRIMARY KEY REFERENCES droplets (id) ON DELETE CASCADE,
    sealed     BLOB    NOT NULL,
    updated_at INTEGER NOT NULL
);
