-- +goose Up
-- Log drains: where an app's log stream is copied (syslog over TCP or TLS,
-- HTTPS batches). The leader delivers each from cursor (a stream id) on,
-- at least once, and moves the cursor after each delivered batch.
CREATE TABLE drains (
  id            BIGINT AUTO_INCREMENT PRIMARY KEY,
  app_id        BIGINT        NOT NULL,
  url           VARCHAR(1024) NOT NULL,
  cursor_id     VARCHAR(64)   NOT NULL,
  event_cursor  BIGINT        NOT NULL DEFAULT 0,
  delivered     BIGINT        NOT NULL DEFAULT 0,
  failing_since DATETIME(6)   NULL,
  last_error    TEXT          NULL,
  created_by    VARCHAR(64)   NOT NULL DEFAULT '',
  created_at    DATETIME(6)   NOT NULL DEFAULT CURRENT_TIMESTAMP(6),
  UNIQUE KEY app_url (app_id, url(255)),
  CONSTRAINT drains_app FOREIGN KEY (app_id) REFERENCES apps (id) ON DELETE CASCADE
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4;

-- +goose Down
DROP TABLE drains;
