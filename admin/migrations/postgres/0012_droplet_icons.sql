-- Droplet icons, fetched by the control plane when a droplet is saved with an icon URL of
-- another site, and served by the gateway (`/droplets/{id}/icon`): pages stay under
-- `img-src 'self' data:`, and users' browsers never contact the site the URL names. Same as
-- ../sqlite/0012_droplet_icons.sql. In the database rather than under the data directory so
-- every gateway of a shared PostgreSQL serves them, `flowcase db copy` and backups carry
-- them, and they go with their droplet (ON DELETE CASCADE). At most 256 KiB each.
CREATE TABLE droplet_icons (
    droplet_id   BIGINT NOT NULL PRIMARY KEY REFERENCES droplets (id) ON DELETE CASCADE,
    -- The URL the bytes came from: a save with the same URL need not fetch again.
    source_url   TEXT    NOT NULL,
    -- One of image/png, image/jpeg, image/gif, image/webp, image/svg+xml (checked against
    -- the bytes, not taken from the remote server).
    content_type TEXT    NOT NULL,
    body         BYTEA    NOT NULL,
    -- A hash of the body: the HTTP ETag and the cache-busting query of the icon's URL.
    etag         TEXT    NOT NULL,
    fetched_at   BIGINT NOT NULL
);
