package server

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"net/http"
	"strconv"

	"github.com/gin-gonic/gin"

	"github.com/dinp/dinp/common"
	"github.com/dinp/dinp/common/db/reads"
	"github.com/dinp/dinp/common/envref"
	"github.com/dinp/dinp/common/httpapi"
)

// A node's heartbeat answer is its whole assignment list, passed through
// from Redis on the hot path. Env is the only part tenants size freely (64
// KB per app), so a node running many apps could receive megabytes every
// beat. The leader keeps each answer small: when a node's list with every
// env inline is over Config.AnswerInlineBytes, it is written with
// Assignment.EnvDigest instead of Env, and the agent fetches each release's
// env once from envref.Path (served from MySQL, for releases assigned to
// that node only). What is left per instance is ids, a name and an image
// reference (bounded by the schema), and maxAnswerBytes is a hard bound on
// top: a list still over it is not written (the node keeps its previous
// one, nothing is stopped) and the leader logs an error naming the node.

// maxAnswerBytes bounds one node's assignment list in Redis and in the
// answer; agents read answers of up to 16 MiB.
const maxAnswerBytes = 8 << 20

// errAnswerTooLarge says a node's list is over maxAnswerBytes even with
// every env by reference.
var errAnswerTooLarge = errors.New("assignments over the answer size bound even with env by reference")

// encodeAssignments encodes a node's list for its heartbeat answer: inline
// when it fits inline bytes, else with every env replaced by its digest.
func encodeAssignments(list []common.Assignment, inline int) ([]byte, error) {
	raw, err := json.Marshal(list)
	if err != nil || len(raw) <= inline {
		return raw, err
	}
	slim := make([]common.Assignment, len(list))
	for i, a := range list {
		if len(a.Env) > 0 {
			a.EnvDigest, a.Env = envref.Digest(a.Env), nil
		}
		slim[i] = a
	}
	if raw, err = json.Marshal(slim); err != nil {
		return nil, err
	}
	if len(raw) > maxAnswerBytes {
		return nil, errAnswerTooLarge
	}
	return raw, nil
}

// serveEnv answers a release's env to the agent of a node it is assigned
// to (envref.Path).
func (s *Server) serveEnv(c *gin.Context) {
	node, app := c.Query("node"), c.Query("app")
	release, err := strconv.Atoi(c.Query("release"))
	if err != nil || !nodeIDRE.MatchString(node) || app == "" {
		httpapi.WriteError(c, common.Errf(http.StatusBadRequest, "bad_request", "node, app and release are required"))
		return
	}
	ctx, cancel := context.WithTimeout(c.Request.Context(), 5*heartbeatTimeout)
	defer cancel()
	pipe := s.rdb.Pipeline()
	known := pipe.HGet(ctx, s.secretsKey, node)
	assigned := pipe.HGet(ctx, s.keys.Assignments(), node)
	pipe.Exec(ctx)
	if known.Err() != nil && assigned.Err() != nil && ctx.Err() != nil {
		httpapi.WriteError(c, errRedisDown)
		return
	}
	if known.Err() != nil || !common.TokenEqual(known.Val(), hashSecret(c.GetHeader(common.HeaderNodeSecret))) {
		httpapi.WriteError(c, common.Errf(http.StatusForbidden, "node_identity", "unknown node or wrong node secret"))
		return
	}
	var list []common.Assignment
	_ = json.Unmarshal([]byte(assigned.Val()), &list)
	mine := false
	for _, a := range list {
		mine = mine || (a.App == app && a.Release == release)
	}
	if !mine {
		httpapi.WriteError(c, common.Errf(http.StatusForbidden, "not_assigned", "release "+strconv.Itoa(release)+" of "+app+" is not assigned to node "+node))
		return
	}
	pool := s.db.Load()
	if pool == nil {
		httpapi.WriteError(c, errIdentityUnavailable)
		return
	}
	env, err := reads.ReleaseEnv(ctx, pool, app, release)
	switch {
	case errors.Is(err, sql.ErrNoRows):
		httpapi.WriteError(c, common.Errf(http.StatusNotFound, "not_found", "no such release"))
	case err != nil:
		s.log.Warn("read release env", "app", app, "release", release, "err", err)
		httpapi.WriteError(c, common.Errf(http.StatusServiceUnavailable, "unavailable", "database unavailable"))
	default:
		c.Data(http.StatusOK, "application/json", []byte(env))
	}
}
