-- +goose Up
-- An admin may let one app's processes run as the image's own user (root
-- included) instead of the platform's unprivileged user. The flag is
-- snapshot in each release, so changing it rolls out like an env change.
ALTER TABLE apps ADD COLUMN allow_root TINYINT(1) NOT NULL DEFAULT 0;
ALTER TABLE releases ADD COLUMN allow_root TINYINT(1) NOT NULL DEFAULT 0;

-- +goose Down
ALTER TABLE releases DROP COLUMN allow_root;
ALTER TABLE apps DROP COLUMN allow_root;
