-- Instance lists are read newest first (`ORDER BY created_at DESC, id DESC`, see
-- admin/src/store/instance_views.rs): the whole list for administrators, one user's for
-- everyone else. Without an index in that order the database sorts every matching row on
-- each request (the scope=all page sorted all 1,000 rows of the API benchmark,
-- bench/api.sh); with one it reads the page in order and stops. The per-user index replaces
-- `instances_user`, whose lookups its first column still serves. Same as
-- ../sqlite/0011_instance_list_order.sql.

CREATE INDEX instances_newest ON instances (created_at, id);
CREATE INDEX instances_user_newest ON instances (user_id, created_at, id);
DROP INDEX instances_user;
