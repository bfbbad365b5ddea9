-- +goose Up
-- Names of deleted apps whose image repositories the registry's collector
-- still has to empty (a row goes once nothing of the repository is left).
CREATE TABLE deleted_apps (
  name       VARCHAR(64) PRIMARY KEY,
  deleted_at DATETIME(6) NOT NULL DEFAULT CURRENT_TIMESTAMP(6)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4;

-- +goose Down
DROP TABLE deleted_apps;
