-- +goose Up
-- Unproven claims no longer hold a domain's name: several apps may claim
-- it, one binding (verified) at most. The first to prove ownership, or an
-- admin binding it, takes it and drops the other claims.
ALTER TABLE domains DROP INDEX name,
  ADD UNIQUE KEY name_app (name, app_id),
  ADD COLUMN bound_name VARCHAR(253) AS (IF(verified, name, NULL)) STORED,
  ADD UNIQUE KEY bound_name (bound_name);

-- +goose Down
ALTER TABLE domains DROP INDEX bound_name, DROP COLUMN bound_name,
  DROP INDEX name_app, ADD UNIQUE KEY name (name);
