-- +goose Up
-- Node identities: the SHA-256 of each node's secret, learnt on its first
-- heartbeat. The source of truth (Redis's node-secrets hash is a cache), so
-- a Redis that lost its data neither locks nodes out nor lets another
-- machine claim a node id.
CREATE TABLE node_secrets (
  node        VARCHAR(64) PRIMARY KEY,
  secret_hash CHAR(64)    NOT NULL,
  created_at  DATETIME(6) NOT NULL DEFAULT CURRENT_TIMESTAMP(6)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4;

-- +goose Down
DROP TABLE node_secrets;
