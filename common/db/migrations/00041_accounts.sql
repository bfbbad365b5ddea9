-- +goose Up
-- A disabled user can neither log in nor use a token; their apps stay with
-- their teams. API tokens may expire.
ALTER TABLE users ADD COLUMN disabled_at DATETIME(6) NULL;
ALTER TABLE tokens ADD COLUMN expires_at DATETIME(6) NULL;

-- +goose Down
ALTER TABLE tokens DROP COLUMN expires_at;
ALTER TABLE users DROP COLUMN disabled_at;
