package server

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"regexp"
	"strconv"
	"strings"
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

// NodeSecretHeader carries a node's identity secret with each heartbeat.
// Servers learn a node's secret on first sight (trust on first use) and
// refuse heartbeats for that node id with another one: the cluster token
// says "an agent of this cluster", the secret says "the agent that owns this
// node id". An operator resets an identity (a node reinstalled with a new
// secret) with HDEL <prefix>:node-secrets <node id>.
const NodeSecretHeader = "X-Dinp-Node-Secret"

// minSecretLen is the shortest node secret accepted.
const minSecretLen = 16

// beatScript stores one heartbeat in a single round trip, atomically with
// the identity check: KEYS node-secrets, node:<id>, nodes, assignments;
// ARGV node id, secret hash, heartbeat JSON, TTL ms, length of the receive
// time suffix. It answers {0} when the node is registered with another
// secret, else {1, changed, assignments?}: changed is 1 when the report
// (the JSON before the suffix) differs from the stored one, or is new.
var beatScript = redis.NewScript(`
local known = redis.call('HGET', KEYS[1], ARGV[1])
if known and known ~= ARGV[2] then return {0} end
if not known then redis.call('HSET', KEYS[1], ARGV[1], ARGV[2]) end
local old = redis.call('GET', KEYS[2])
local n = tonumber(ARGV[5])
local changed = 1
if old and #old == #ARGV[3] and string.sub(old, 1, #old - n) == string.sub(ARGV[3], 1, #ARGV[3] - n) then changed = 0 end
redis.call('SET', KEYS[2], ARGV[3], 'PX', ARGV[4])
redis.call('SADD', KEYS[3], ARGV[1])
local a = redis.call('HGET', KEYS[4], ARGV[1])
if not a then return {1, changed} end
return {1, changed, a}
`)

// nodeSecretsKey is the hash node id → hex SHA-256 of its secret. It is
// derived from the common key set (it belongs in common.Keys).
func nodeSecretsKey(k common.Keys) string {
	return strings.TrimSuffix(k.Nodes(), "nodes") + "node-secrets"
}

// heartbeatHead is what the server checks of a heartbeat.
type heartbeatHead struct {
	Node, Addr string
}

// read checks that body is one JSON object and reads its "node" and "addr"
// (agents send them first, so the rest is only scanned once, for syntax).
func (h *heartbeatHead) read(body []byte) error {
	if !json.Valid(body) {
		return errors.New("not JSON")
	}
	dec := json.NewDecoder(bytes.NewReader(body))
	if tok, _ := dec.Token(); tok != json.Delim('{') {
		return errors.New("not a JSON object")
	}
	var gotNode, gotAddr bool
	for dec.More() && !(gotNode && gotAddr) {
		tok, err := dec.Token()
		if err != nil {
			return err
		}
		switch tok {
		case "node":
			gotNode = true
			if err := dec.Decode(&h.Node); err != nil {
				return fmt.Errorf("node: %w", err)
			}
		case "addr":
			gotAddr = true
			if err := dec.Decode(&h.Addr); err != nil {
				return fmt.Errorf("addr: %w", err)
			}
		default:
			var skip json.RawMessage
			if err := dec.Decode(&skip); err != nil {
				return err
			}
		}
	}
	return nil
}

// atField starts the receive time stampHeartbeat appends; atLayout is
// fixed-width so the suffix has a fixed length (atSuffixLen) and the script
// can compare reports without parsing.
const (
	atField     = `,"at":"`
	atLayout    = "2006-01-02T15:04:05.000000000Z"
	atSuffixLen = len(atField) + len(atLayout) + 2 // `"}`
)

// stampHeartbeat appends the server's receive time to a heartbeat body (a
// JSON object, already decoded successfully).
func stampHeartbeat(body []byte, at time.Time) []byte {
	inner := bytes.TrimRight(bytes.TrimRight(body, " \t\r\n")[:len(bytes.TrimRight(body, " \t\r\n"))-1], " \t\r\n")
	out := make([]byte, 0, len(inner)+48)
	out = append(out, inner...) // the object without its closing brace
	if inner[len(inner)-1] == '{' {
		out = append(out, atField[1:]...) // empty object: no comma
	} else {
		out = append(out, atField...)
	}
	out = at.UTC().AppendFormat(out, atLayout)
	return append(out, '"', '}')
}

// unchangedReport is the part of a stored heartbeat before the receive time:
// equal prefixes mean the node reported exactly the same thing.
func unchangedReport(raw string) string {
	if i := strings.LastIndex(raw, atField); i >= 0 {
		return raw[:i]
	}
	return raw
}

func hashSecret(secret string) string {
	sum := sha256.Sum256([]byte(secret))
	return hex.EncodeToString(sum[:])
}

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
	// Only what the server checks is decoded; the rest (the container list,
	// most of the body) is checked for syntax and stored as sent. The leader
	// decodes it, and only when it changed. This is the hot path of the
	// platform: one syntax pass plus the first fields.
	var hb heartbeatHead
	if err := hb.read(body); err != nil {
		common.WriteError(c, common.Errf(http.StatusBadRequest, "bad_json", "heartbeat is not valid: "+err.Error()))
		return
	}
	secret := c.GetHeader(NodeSecretHeader)
	if len(secret) < minSecretLen {
		common.WriteError(c, common.Errf(http.StatusForbidden, "node_identity",
			"heartbeat needs a node secret of at least 16 characters in "+NodeSecretHeader))
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
	// The stored time is when a server received it: agents' clocks may
	// drift. It is appended to the body as it came (the last "at" wins when
	// decoding) rather than re-encoding the whole report: cheaper, and the
	// leader can tell an unchanged report by the bytes before the suffix.
	raw := stampHeartbeat(body, time.Now().UTC())

	// Bounded: with Redis down the agent learns it at once (503) instead of
	// waiting out the client's retries, and changes nothing.
	ctx, cancel := context.WithTimeout(c.Request.Context(), heartbeatTimeout)
	defer cancel()
	res, err := beatScript.Run(ctx, s.rdb,
		[]string{s.secretsKey, s.keys.Node(hb.Node), s.keys.Nodes(), s.keys.Assignments()},
		hb.Node, hashSecret(secret), raw, (3 * s.cfg.HeartbeatInterval).Milliseconds(), atSuffixLen).Slice()
	if err != nil || len(res) == 0 || (len(res) < 2 && res[0] == int64(1)) {
		s.log.Warn("store heartbeat", "node", hb.Node, "err", err)
		common.WriteError(c, errRedisDown)
		return
	}
	if ok, _ := res[0].(int64); ok != 1 {
		s.log.Warn("heartbeat refused: node secret mismatch", "node", hb.Node, "remote", c.ClientIP())
		common.WriteError(c, common.Errf(http.StatusForbidden, "node_identity",
			"node "+hb.Node+" is registered with another secret (an operator resets it with: redis-cli HDEL "+s.secretsKey+" "+hb.Node+")"))
		return
	}
	// A report that changed is news for the leader now; an unchanged one
	// only proves liveness, which the leader's periodic round checks. So a
	// thousand idle nodes do not drive a thousand rounds.
	if changed, _ := res[1].(int64); changed == 1 {
		s.trigger()
	}

	interval := strconv.FormatInt(s.cfg.HeartbeatInterval.Milliseconds(), 10)
	var assignments []byte
	if len(res) > 2 {
		str, _ := res[2].(string)
		assignments = []byte(str)
	}
	switch {
	case len(res) < 3:
		c.Data(http.StatusOK, "application/json", []byte(`{"known":false,"assignments":[],"interval_ms":`+interval+`}`))
		return
	case len(assignments) < 2 || assignments[0] != '[' || assignments[len(assignments)-1] != ']':
		// Only the leader writes this field, always a JSON list; a cheap
		// shape check (an agent that cannot decode an answer changes nothing).
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
