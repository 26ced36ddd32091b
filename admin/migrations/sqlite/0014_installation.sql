-- This installation's identity: one row, written on first use (`Store::installation_id`), never
-- changed, carried to PostgreSQL by `flowcase db copy`. Profile volumes are labelled with it, so
-- another installation on the same engine, or a new database whose user ids start over, never
-- mounts another's users' profiles. Same as ../postgres/0014_installation.sql.

CREATE TABLE installation (
    singleton INTEGER PRIMARY KEY CHECK (singleton = 1),
    id TEXT NOT NULL
);
