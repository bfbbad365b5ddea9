-- +goose Up
CREATE TABLE users (
  id            BIGINT AUTO_INCREMENT PRIMARY KEY,
  name          VARCHAR(64)  NOT NULL UNIQUE,
  password_hash VARCHAR(100) NOT NULL,
  is_admin      BOOLEAN      NOT NULL DEFAULT FALSE,
  created_at    DATETIME(6)  NOT NULL DEFAULT CURRENT_TIMESTAMP(6)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4;

CREATE TABLE teams (
  id         BIGINT AUTO_INCREMENT PRIMARY KEY,
  name       VARCHAR(64) NOT NULL UNIQUE,
  created_at DATETIME(6) NOT NULL DEFAULT CURRENT_TIMESTAMP(6)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4;

CREATE TABLE memberships (
  user_id BIGINT      NOT NULL,
  team_id BIGINT      NOT NULL,
  role    VARCHAR(16) NOT NULL DEFAULT 'member',
  PRIMARY KEY (user_id, team_id),
  FOREIGN KEY (user_id) REFERENCES users(id) ON DELETE CASCADE,
  FOREIGN KEY (team_id) REFERENCES teams(id) ON DELETE CASCADE
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4;

-- API tokens are stored as SHA-256 hex of the secret.
CREATE TABLE tokens (
  id           BIGINT AUTO_INCREMENT PRIMARY KEY,
  user_id      BIGINT      NOT NULL,
  name         VARCHAR(64) NOT NULL,
  hash         CHAR(64)    NOT NULL UNIQUE,
  created_at   DATETIME(6) NOT NULL DEFAULT CURRENT_TIMESTAMP(6),
  last_used_at DATETIME(6) NULL,
  revoked_at   DATETIME(6) NULL,
  FOREIGN KEY (user_id) REFERENCES users(id) ON DELETE CASCADE
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4;

-- Desired state of an app. current_release is the version N of the release
-- that should run (NULL until the first deploy).
CREATE TABLE apps (
  id              BIGINT AUTO_INCREMENT PRIMARY KEY,
  name            VARCHAR(63) NOT NULL UNIQUE,
  team_id         BIGINT      NOT NULL,
  instances       INT         NOT NULL DEFAULT 1,
  memory_mb       INT         NOT NULL DEFAULT 128,
  cpu_shares      INT         NOT NULL DEFAULT 256,
  health_json     TEXT        NOT NULL,
  env_json        MEDIUMTEXT  NOT NULL,
  constraints_json TEXT       NOT NULL,
  balance         VARCHAR(16) NOT NULL DEFAULT '',
  sticky          BOOLEAN     NOT NULL DEFAULT FALSE,
  current_release INT         NULL,
  created_at      DATETIME(6) NOT NULL DEFAULT CURRENT_TIMESTAMP(6),
  updated_at      DATETIME(6) NOT NULL DEFAULT CURRENT_TIMESTAMP(6) ON UPDATE CURRENT_TIMESTAMP(6),
  FOREIGN KEY (team_id) REFERENCES teams(id)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4;

-- A release is immutable: image pinned by digest, env and limits snapshot.
CREATE TABLE releases (
  id          BIGINT AUTO_INCREMENT PRIMARY KEY,
  app_id      BIGINT       NOT NULL,
  version     INT          NOT NULL,
  image       VARCHAR(512) NOT NULL,
  stack       VARCHAR(16)  NOT NULL DEFAULT '',
  build_id    BIGINT       NULL,
  env_json    MEDIUMTEXT   NOT NULL,
  memory_mb   INT          NOT NULL,
  cpu_shares  INT          NOT NULL,
  description VARCHAR(255) NOT NULL DEFAULT '',
  created_by  VARCHAR(64)  NOT NULL DEFAULT '',
  created_at  DATETIME(6)  NOT NULL DEFAULT CURRENT_TIMESTAMP(6),
  UNIQUE KEY app_version (app_id, version),
  FOREIGN KEY (app_id) REFERENCES apps(id) ON DELETE CASCADE
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4;

CREATE TABLE builds (
  id           BIGINT AUTO_INCREMENT PRIMARY KEY,
  app_id       BIGINT       NOT NULL,
  status       VARCHAR(16)  NOT NULL,          -- queued, building, succeeded, failed
  stack        VARCHAR(16)  NOT NULL DEFAULT '',
  content_hash CHAR(64)     NOT NULL DEFAULT '',
  image        VARCHAR(512) NOT NULL DEFAULT '',
  size_bytes   BIGINT       NOT NULL DEFAULT 0,
  error        TEXT         NULL,
  timings_json TEXT         NULL,
  created_by   VARCHAR(64)  NOT NULL DEFAULT '',
  created_at   DATETIME(6)  NOT NULL DEFAULT CURRENT_TIMESTAMP(6),
  started_at   DATETIME(6)  NULL,
  finished_at  DATETIME(6)  NULL,
  KEY app_hash (app_id, content_hash),
  FOREIGN KEY (app_id) REFERENCES apps(id) ON DELETE CASCADE
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4;

CREATE TABLE domains (
  id         BIGINT AUTO_INCREMENT PRIMARY KEY,
  name       VARCHAR(253) NOT NULL UNIQUE,
  app_id     BIGINT       NOT NULL,
  verified   BOOLEAN      NOT NULL DEFAULT FALSE,
  token      VARCHAR(64)  NOT NULL DEFAULT '',
  created_at DATETIME(6)  NOT NULL DEFAULT CURRENT_TIMESTAMP(6),
  FOREIGN KEY (app_id) REFERENCES apps(id) ON DELETE CASCADE
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4;

-- The placement the leader decided. state: pending (assigned, not yet seen),
-- running, failed, stopping (to be removed), lost (node lost).
CREATE TABLE instances (
  id           VARCHAR(32)  PRIMARY KEY,
  app_id       BIGINT       NOT NULL,
  release_version INT       NOT NULL,
  idx          INT          NOT NULL,
  node         VARCHAR(64)  NOT NULL,
  state        VARCHAR(16)  NOT NULL,
  host_port    INT          NOT NULL DEFAULT 0,
  container_id VARCHAR(80)  NOT NULL DEFAULT '',
  restarts     INT          NOT NULL DEFAULT 0,
  error        TEXT         NULL,
  created_at   DATETIME(6)  NOT NULL DEFAULT CURRENT_TIMESTAMP(6),
  updated_at   DATETIME(6)  NOT NULL DEFAULT CURRENT_TIMESTAMP(6) ON UPDATE CURRENT_TIMESTAMP(6),
  started_at   DATETIME(6)  NULL,
  KEY app (app_id),
  KEY node (node),
  FOREIGN KEY (app_id) REFERENCES apps(id) ON DELETE CASCADE
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4;

CREATE TABLE nodes (
  id           VARCHAR(64)  PRIMARY KEY,
  address      VARCHAR(255) NOT NULL,
  labels_json  TEXT         NOT NULL,
  memory_mb    BIGINT       NOT NULL DEFAULT 0,
  cpus         INT          NOT NULL DEFAULT 0,
  drain        BOOLEAN      NOT NULL DEFAULT FALSE,
  last_seen_at DATETIME(6)  NULL,
  created_at   DATETIME(6)  NOT NULL DEFAULT CURRENT_TIMESTAMP(6)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4;

CREATE TABLE events (
  id      BIGINT AUTO_INCREMENT PRIMARY KEY,
  app_id  BIGINT      NOT NULL,
  kind    VARCHAR(32) NOT NULL,
  message TEXT        NOT NULL,
  at      DATETIME(6) NOT NULL DEFAULT CURRENT_TIMESTAMP(6),
  KEY app_at (app_id, at),
  FOREIGN KEY (app_id) REFERENCES apps(id) ON DELETE CASCADE
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4;

-- +goose Down
DROP TABLE events;
DROP TABLE nodes;
DROP TABLE instances;
DROP TABLE domains;
DROP TABLE builds;
DROP TABLE releases;
DROP TABLE apps;
DROP TABLE tokens;
DROP TABLE memberships;
DROP TABLE teams;
DROP TABLE users;
