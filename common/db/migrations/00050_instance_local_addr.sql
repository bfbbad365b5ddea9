-- +goose Up
-- The instance's address on its node (container IP:port on its network),
-- as its agent reports it; routes carry it so a router on the same node
-- skips the engine's port proxy. Empty: not reported.
ALTER TABLE instances ADD COLUMN local_addr VARCHAR(64) NOT NULL DEFAULT '' AFTER host_port;

-- +goose Down
ALTER TABLE instances DROP COLUMN local_addr;
