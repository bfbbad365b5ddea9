-- +goose Up
-- How an instance's last container ended on its own (issue 13), and the
-- evidence an event carries: the last output lines of the instance.
ALTER TABLE instances
  ADD COLUMN last_exit     VARCHAR(255) NULL,
  ADD COLUMN last_exit_at  DATETIME(6)  NULL,
  ADD COLUMN last_exit_oom BOOLEAN      NOT NULL DEFAULT FALSE;
ALTER TABLE events
  ADD COLUMN instance VARCHAR(32) NULL,
  ADD COLUMN evidence MEDIUMTEXT  NULL;

-- +goose Down
ALTER TABLE events DROP COLUMN evidence, DROP COLUMN instance;
ALTER TABLE instances DROP COLUMN last_exit_oom, DROP COLUMN last_exit_at, DROP COLUMN last_exit;
