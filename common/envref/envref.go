// Package envref names an assignment's env by digest, for heartbeat
// answers too large to carry every env inline (see server/envref.go).
package envref

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
)

// Path is the server endpoint an agent reads an assignment's env from
// when its answer carried only Assignment.EnvDigest:
// GET EnvPath?node=<id>&app=<app>&release=<n>, cluster token as Bearer and
// the node's secret in common.HeaderNodeSecret. The server answers only for a
// release assigned to that node.
const Path = "/v1/env"

// Digest is the digest of an env: sha256 of its JSON (keys sorted).
func Digest(env map[string]string) string {
	if env == nil {
		env = map[string]string{}
	}
	raw, _ := json.Marshal(env)
	sum := sha256.Sum256(raw)
	return "sha256:" + hex.EncodeToString(sum[:])
}
