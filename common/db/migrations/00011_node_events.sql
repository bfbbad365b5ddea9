-- +goose Up
-- What admins did to nodes (drain, undrain, forget), newest last.
CREATE TABLE node_events (
  id      BIGINT AUTO_INCREMENT PRIMARY KEY,
  node    VARCHAR(64) NOT NULL,
  kind    VARCHAR(32) NOT NULL,
  message TEXT        NOT NULL,
  by_user VARCHAR(64) NOT NULL DEFAULT '',
  at      DATETIME(6) NOT NULL DEFAULT CURRENT_TIMESTAMP(6),
  KEY node_at (node, at)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4;

-- +goose Down
DROP TABLE node_events;
