-- +goose Up
-- Labels an admin set on a node (PUT /api/v1/nodes/{id}/labels), kept apart
-- from labels_json, which the leader rewrites from the agent's heartbeat:
-- placement sees the agent's labels with these over them (admin wins).
ALTER TABLE nodes ADD COLUMN admin_labels_json TEXT NULL AFTER labels_json;

-- +goose Down
ALTER TABLE nodes DROP COLUMN admin_labels_json;
