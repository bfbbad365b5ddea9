package common

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
)

// EnvPath is the server endpoint an agent reads an assignment's env from
// when its answer carried only Assignment.EnvDigest:
// GET EnvPath?node=<id>&app=<app>&release=<n>, cluster token as Bearer and
// the node's secret in HeaderNodeSecret. The server answers only for a
// release assigned to that node.
const EnvPath = "/v1/env"

// EnvDigest is the digest of an env: sha256 of its JSON (keys sorted).
func EnvDigest(env map[string]string) string {
	if env == nil {
		env = map[string]string{}
	}
	raw, _ := json.Marshal(env)
	sum := sha256.Sum256(raw)
	return "sha256:" + hex.EncodeToString(sum[:])
}
