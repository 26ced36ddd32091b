-- Which guacd opens a desktop droplet's instances: the shared one of the configuration
-- (`[guacd] address`, 'shared') or a guacd container started with each instance on the
-- instance's own network ('sidecar'), from `guacd_image` or, when NULL, the configured
-- `[guacd] sidecar_image`. An instance keeps where its sidecar listens (`guacd`, host:port),
-- written when the sidecar is up and cleared when it is removed, so the tunnel finds it
-- without asking the engine. Same as ../sqlite/0012_guacd_sidecar.sql.

ALTER TABLE droplets ADD COLUMN guacd TEXT NOT NULL DEFAULT 'shared';
ALTER TABLE droplets ADD COLUMN guacd_image TEXT;
ALTER TABLE instances ADD COLUMN guacd TEXT;
