-- The instances a workshop started: one row per (workshop, participant, droplet of the
-- template), since a workshop may hold several droplets and `workshop_participants` links one
-- instance only. Same as ../postgres/0010_workshop_instances.sql.
--
-- A row is also a claim: `launching` = 1 while a launch is under way (since `claimed_at`), so a
-- second "start all" does not launch twice; `error` says why the last launch failed before any
-- instance existed (image missing, quota).
CREATE TABLE workshop_instances (
    workshop_id  INTEGER NOT NULL REFERENCES workshops (id) ON DELETE CASCADE,
    user_id      INTEGER NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    droplet_id   INTEGER NOT NULL REFERENCES droplets (id) ON DELETE CASCADE,
    instance_id  INTEGER REFERENCES instances (id) ON DELETE SET NULL,
    error        TEXT,
    launching    INTEGER NOT NULL DEFAULT 0 CHECK (launching IN (0, 1)),
    claimed_at   INTEGER NOT NULL,
    PRIMARY KEY (workshop_id, user_id, droplet_id)
);
CREATE INDEX workshop_instances_instance ON workshop_instances (instance_id);
