-- +goose Up
-- Per-team limits set by admins; NULL means dash's default (--team-max-*).
ALTER TABLE teams
  ADD COLUMN max_apps      INT    NULL,
  ADD COLUMN max_instances INT    NULL,
  ADD COLUMN max_memory_mb BIGINT NULL,
  ADD COLUMN max_domain_claims INT NULL;

-- +goose Down
ALTER TABLE teams DROP COLUMN max_apps, DROP COLUMN max_instances, DROP COLUMN max_memory_mb, DROP COLUMN max_domain_claims;
