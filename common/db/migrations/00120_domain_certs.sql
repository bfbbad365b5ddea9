-- +goose Up
-- Automatic TLS for verified custom domains: the leader server's ACME
-- client keeps its accounts and every domain's certificate here (the
-- source of truth; Redis only carries copies to the routers).
CREATE TABLE acme_accounts (
  id         BIGINT AUTO_INCREMENT PRIMARY KEY,
  directory  VARCHAR(512) NOT NULL,
  email      VARCHAR(254) NOT NULL DEFAULT '',
  key_pem    TEXT         NOT NULL,
  uri        VARCHAR(512) NOT NULL,
  created_at DATETIME(6)  NOT NULL DEFAULT CURRENT_TIMESTAMP(6),
  UNIQUE KEY directory_email (directory(300), email)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4;

CREATE TABLE domain_certs (
  name       VARCHAR(253) NOT NULL PRIMARY KEY,
  state      VARCHAR(16)  NOT NULL,
  issuer     VARCHAR(255) NOT NULL DEFAULT '',
  not_after  DATETIME(6)  NULL,
  renew_at   DATETIME(6)  NULL,
  cert_pem   MEDIUMTEXT   NULL,
  key_pem    TEXT         NULL,
  last_error TEXT         NULL,
  failures   INT          NOT NULL DEFAULT 0,
  next_try   DATETIME(6)  NULL,
  updated_at DATETIME(6)  NOT NULL DEFAULT CURRENT_TIMESTAMP(6) ON UPDATE CURRENT_TIMESTAMP(6)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4;

-- +goose Down
DROP TABLE domain_certs;
DROP TABLE acme_accounts;
