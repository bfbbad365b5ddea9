-- +goose Up
-- The stack version (a Debian-based stack's build time) each build's image
-- runs on, and every stack version a builder has used or built: an app whose
-- release runs on an older version than its stack's newest is outdated.
ALTER TABLE builds ADD COLUMN stack_version VARCHAR(32) NOT NULL DEFAULT '' AFTER stack;
CREATE TABLE stack_versions (
  stack      VARCHAR(16)  NOT NULL,
  version    VARCHAR(32)  NOT NULL,
  created_at DATETIME(6)  NOT NULL DEFAULT CURRENT_TIMESTAMP(6),
  PRIMARY KEY (stack, version)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4;

-- +goose Down
DROP TABLE stack_versions;
ALTER TABLE builds DROP COLUMN stack_version;
