package server

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"net"
	"net/http"
	"regexp"
	"strconv"
	"time"

	"github.com/gin-gonic/gin"
	"github.com/redis/go-redis/v9"

	"github.com/dinp/dinp/common"
)

// heartbeatTimeout bounds the Redis work of one heartbeat.
const heartbeatTimeout = time.Second

// maxHeartbeatBytes bounds a heartbeat body (thousands of containers fit).
const maxHeartbeatBytes = 8 << 20

// nodeIDRE is what a node id may look like: it becomes a Redis key part,
// a container label and a nodes.id value (64 chars).
var nodeIDRE = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$`)

var errRedisDown = common.Errf(http.StatusServiceUnavailable, "unavailable", "state store unavailable")

func (s *Server) routes() http.Handler {
	r := common.NewEngine()
	r.GET("/health", func(c *gin.Context) {
		c.JSON(http.StatusOK, gin.H{"ok": true, "server": s.cfg.ID, "leader": s.IsLeader()})
	})
	v1 := r.Group("/v1", common.RequireToken(s.cfg.ClusterToken))
	v1.POST("/heartbeat", s.heartbeat)
	return r
}

// heartbeat stores the node's report and answers its assignments. It is the
// hot path of the whole platform: one pipelined Redis round trip, no MySQL,
// and the assignments are passed through without decoding.
func (s *Server) heartbeat(c *gin.Context) {
	body, err := io.ReadAll(http.MaxBytesReader(c.Writer, c.Request.Body, maxHeartbeatBytes))
	if err != nil {
		var tooBig *http.MaxBytesError
		if errors.As(err, &tooBig) {
			common.WriteError(c, common.Errf(http.StatusRequestEntityTooLarge, "too_large", "heartbeat too large"))
			return
		}
		common.WriteError(c, common.Errf(http.StatusBadRequest, "bad_request", "cannot read body"))
		return
	}
	var hb common.Heartbeat
	if err := json.Unmarshal(body, &hb); err != nil {
		common.WriteError(c, common.Errf(http.StatusBadRequest, "bad_json", "heartbeat is not valid JSON: "+err.Error()))
		return
	}
	if !nodeIDRE.MatchString(hb.Node) {
		common.WriteError(c, common.Errf(http.StatusBadRequest, "bad_node", "node id must be 1-64 of [A-Za-z0-9._-]"))
		return
	}
	if net.ParseIP(hb.Addr) == nil {
		common.WriteError(c, common.Errf(http.StatusBadRequest, "bad_addr", "addr must be an IP address"))
		return
	}
	// The stored time is when a server received it: agents' clocks may drift.
	hb.At = time.Now().UTC()
	raw, err := json.Marshal(hb)
	if err != nil {
		common.WriteError(c, err)
		return
	}

	// Bounded: with Redis down the agent learns it at once (503) instead of
	// waiting out the client's retries, and changes nothing.
	ctx, cancel := context.WithTimeout(c.Request.Context(), heartbeatTimeout)
	defer cancel()
	pipe := s.rdb.Pipeline()
	set := pipe.Set(ctx, s.keys.Node(hb.Node), raw, 3*s.cfg.HeartbeatInterval)
	pipe.SAdd(ctx, s.keys.Nodes(), hb.Node)
	get := pipe.HGet(ctx, s.keys.Assignments(), hb.Node)
	_, _ = pipe.Exec(ctx) // each command's error is checked below
	if err := set.Err(); err != nil {
		s.log.Warn("store heartbeat", "node", hb.Node, "err", err)
		common.WriteError(c, errRedisDown)
		return
	}
	s.trigger()

	interval := strconv.FormatInt(s.cfg.HeartbeatInterval.Milliseconds(), 10)
	assignments, err := get.Bytes()
	switch {
	case errors.Is(err, redis.Nil):
		c.Data(http.StatusOK, "application/json", []byte(`{"known":false,"assignments":[],"interval_ms":`+interval+`}`))
		return
	case err != nil:
		s.log.Warn("read assignments", "node", hb.Node, "err", err)
		common.WriteError(c, errRedisDown)
		return
	case !json.Valid(assignments):
		s.log.Error("corrupt assignments", "node", hb.Node)
		c.Data(http.StatusOK, "application/json", []byte(`{"known":false,"assignments":[],"interval_ms":`+interval+`}`))
		return
	}
	out := make([]byte, 0, len(assignments)+64)
	out = append(out, `{"known":true,"assignments":`...)
	out = append(out, assignments...)
	out = append(out, `,"interval_ms":`...)
	out = append(out, interval...)
	out = append(out, '}')
	c.Data(http.StatusOK, "application/json", out)
}
