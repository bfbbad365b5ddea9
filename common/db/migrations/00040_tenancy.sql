-- +goose Up
-- Team membership is by invitation: a team owner invites, the invited user
-- accepts (or declines); nobody is enrolled without consent.
CREATE TABLE invitations (
  team_id    BIGINT      NOT NULL,
  user_id    BIGINT      NOT NULL,
  role       VARCHAR(16) NOT NULL DEFAULT 'member',
  invited_by BIGINT      NULL,
  created_at DATETIME(6) NOT NULL DEFAULT CURRENT_TIMESTAMP(6),
  PRIMARY KEY (team_id, user_id),
  FOREIGN KEY (team_id) REFERENCES teams(id) ON DELETE CASCADE,
  FOREIGN KEY (user_id) REFERENCES users(id) ON DELETE CASCADE,
  FOREIGN KEY (invited_by) REFERENCES users(id) ON DELETE SET NULL
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4;

-- An app created without naming a team goes to its creator's personal team
-- (created on first use), never to a team someone else put them in.
ALTER TABLE users ADD COLUMN personal_team_id BIGINT NULL,
  ADD CONSTRAINT users_personal_team_fk FOREIGN KEY (personal_team_id) REFERENCES teams(id) ON DELETE SET NULL;
-- The bootstrap admin's apps keep going to team main.
UPDATE users u JOIN teams t ON t.name = 'main'
  JOIN memberships m ON m.team_id = t.id AND m.user_id = u.id AND m.role = 'owner'
  SET u.personal_team_id = t.id WHERE u.is_admin;

-- +goose Down
ALTER TABLE users DROP FOREIGN KEY users_personal_team_fk;
ALTER TABLE users DROP COLUMN personal_team_id;
DROP TABLE invitations;
