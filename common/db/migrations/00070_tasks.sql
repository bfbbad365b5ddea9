-- +goose Up
-- One-off tasks and release-phase tasks (issue 13). dash inserts pending
-- rows; the leader places them (node, assigned), records what the node
-- reports (running, then a final state) and never places a row twice.
CREATE TABLE tasks (
  id              VARCHAR(32)  PRIMARY KEY,
  app_id          BIGINT       NOT NULL,
  release_version INT          NOT NULL,
  kind            VARCHAR(16)  NOT NULL DEFAULT 'run', -- run, release
  command_json    TEXT         NOT NULL,
  state           VARCHAR(16)  NOT NULL,
  node            VARCHAR(64)  NOT NULL DEFAULT '',
  exit_code       INT          NULL,
  reason          TEXT         NULL,
  time_limit_s    INT          NOT NULL,
  memory_mb       INT          NOT NULL,
  created_by      VARCHAR(64)  NOT NULL DEFAULT '',
  created_at      DATETIME(6)  NOT NULL DEFAULT CURRENT_TIMESTAMP(6),
  assigned_at     DATETIME(6)  NULL,
  started_at      DATETIME(6)  NULL,
  finished_at     DATETIME(6)  NULL,
  KEY app_created (app_id, created_at),
  KEY state (state),
  FOREIGN KEY (app_id) REFERENCES apps(id) ON DELETE CASCADE
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4;
-- The Procfile's release: command, kept by the builder and carried by
-- every release made from the build.
ALTER TABLE builds ADD COLUMN release_command TEXT NULL;
ALTER TABLE releases ADD COLUMN release_command TEXT NULL;

-- +goose Down
ALTER TABLE releases DROP COLUMN release_command;
ALTER TABLE builds DROP COLUMN release_command;
DROP TABLE tasks;
