package server

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"hash/crc32"
	"net"
	"net/http"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gin-gonic/gin"
	"github.com/redis/go-redis/v9"

	"github.com/dinp/dinp/common"
	"github.com/dinp/dinp/common/config"
	"github.com/dinp/dinp/common/envref"
	"github.com/dinp/dinp/common/httpapi"
)

// heartbeatTimeout bounds the Redis work of one heartbeat.
const heartbeatTimeout = time.Second

// maxHeartbeatBytes bounds a heartbeat body (thousands of containers fit).
const maxHeartbeatBytes = 8 << 20

// nodeIDRE is what a node id may look like: it becomes a Redis key part,
// a container label and a nodes.id value (64 chars).
var nodeIDRE = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$`)

// Node identity: every heartbeat carries the node's secret in
// common.HeaderNodeSecret. Servers learn a node's secret on first sight
// (trust on first use) and refuse heartbeats for that node id with another
// one: the cluster token says "an agent of this cluster", the secret says
// "the agent that owns this node id". The secret's hash lives in MySQL
// (table node_secrets, the source of truth: Redis losing its data must
// neither lock a node out nor let another machine take its id) and is
// cached in the Redis hash Keys.NodeSecrets, which the hot path reads. An
// operator resets an identity (a node reinstalled with a new secret) by
// deleting the node's row of node_secrets and its field of the hash.

// minSecretLen is the shortest node secret accepted.
const minSecretLen = 16

// beatScript finishes storing one heartbeat, atomically with the identity
// check. The body itself never enters Lua (copying 12 KB strings through the
// script cost Redis ~140 µs a beat): the same pipeline first SETs it under a
// private incoming key with the node's TTL, and the script RENAMEs that key
// over node:<id> — or deletes it when the secret does not match, so a
// refused heartbeat stores nothing.
//
// KEYS node-secrets, node:<id>, nodes, incoming key, node-digests; ARGV
// node id, secret hash, report digest, vouched ("1" when MySQL has just
// confirmed the secret). It answers {0} when the node is registered with
// another secret, {2} when the cache does not know the node and the secret
// was not vouched for (the caller checks MySQL and calls again), else
// {1, changed}: changed is 1 when the report's digest differs from the last
// one stored for the node, or the node had no live heartbeat. The node's assignments are read by a plain
// HGET in the same pipeline (8 KB through Lua costs as much as the rest).
var beatScript = redis.NewScript(`
local known = redis.call('HGET', KEYS[1], ARGV[1])
if known and known ~= ARGV[2] then
  redis.call('DEL', KEYS[4])
  return {0}
end
if not known then
  if ARGV[4] ~= '1' then
    redis.call('DEL', KEYS[4])
    return {2}
  end
  redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
end
local changed = 1
if redis.call('EXISTS', KEYS[2]) == 1 and redis.call('HGET', KEYS[5], ARGV[1]) == ARGV[3] then changed = 0 end
if changed == 1 then redis.call('HSET', KEYS[5], ARGV[1], ARGV[3]) end
redis.call('RENAME', KEYS[4], KEYS[2])
redis.call('SADD', KEYS[3], ARGV[1])
return {1, changed}
`)

// incomingSeq makes incoming keys unique within a process.
var incomingSeq atomic.Uint64

// incomingTag makes incoming keys unique across processes.
var incomingTag = config.RandomToken(6)

// storeBeat stores raw (a stamped heartbeat) as node's report in one
// pipelined round trip and returns the script's answer (see beatScript)
// with the node's assignments appended when it was accepted and they exist.
// vouched says MySQL confirmed secretHash for node (see Server.vouch).
func storeBeat(ctx context.Context, rdb *redis.Client, keys common.Keys, node, secretHash string, raw []byte, ttl time.Duration, vouched bool) ([]any, error) {
	report := raw[:max(len(raw)-atSuffixLen, 0)]
	digest := strconv.Itoa(len(report)) + ":" + strconv.FormatUint(uint64(crc32.Checksum(report, castagnoli)), 16)
	incoming := keys.Node(node) + ":incoming:" + incomingTag + ":" + strconv.FormatUint(incomingSeq.Add(1), 36)
	kk := []string{keys.NodeSecrets(), keys.Node(node), keys.Nodes(), incoming, keys.NodeDigests()}
	for attempt := 0; ; attempt++ {
		pipe := rdb.Pipeline()
		pipe.Set(ctx, incoming, raw, ttl)
		v := "0"
		if vouched {
			v = "1"
		}
		cmd := beatScript.EvalSha(ctx, pipe, kk, node, secretHash, digest, v)
		assigned := pipe.HGet(ctx, keys.Assignments(), node)
		_, err := pipe.Exec(ctx)
		if errors.Is(err, redis.Nil) {
			err = cmd.Err() // only the HGET missed: no assignments yet
		}
		if err != nil && attempt == 0 && redis.HasErrorPrefix(cmd.Err(), "NOSCRIPT") {
			// First use on this Redis (or after SCRIPT FLUSH): load it and
			// redo the pair (the incoming SET is simply repeated).
			if err := beatScript.Load(ctx, rdb).Err(); err != nil {
				return nil, err
			}
			continue
		}
		if err != nil {
			return nil, err
		}
		res, err := cmd.Slice()
		if err != nil {
			return nil, err
		}
		if ok, _ := res[0].(int64); ok == 1 && len(res) == 2 && assigned.Err() == nil {
			res = append(res, assigned.Val())
		}
		return res, nil
	}
}

// castagnoli is the CRC table of report digests (hardware-accelerated).
// A digest only decides whether the leader is poked at once; the leader
// compares full reports itself, so a collision costs at most one
// reconcile interval of latency.
var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// heartbeatHead is what the server checks of a heartbeat.
type heartbeatHead struct {
	Node, Addr string
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
func stampHeartbeat(body []byte, at time.Time) []byte { return stampHeartbeatTo(nil, body, at) }

// stampHeartbeatTo is stampHeartbeat appending to dst[:0].
func stampHeartbeatTo(dst, body []byte, at time.Time) []byte {
	inner := bytes.TrimRight(bytes.TrimRight(body, " \t\r\n")[:len(bytes.TrimRight(body, " \t\r\n"))-1], " \t\r\n")
	out := slices.Grow(dst[:0], len(inner)+48)
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

var errIdentityUnavailable = common.Errf(http.StatusServiceUnavailable, "unavailable",
	"cannot check the node's identity: the database is unavailable")

// vouch checks secretHash against the node's identity in MySQL, recording
// it if the node has none yet (trust on first use, once per node for the
// life of the database). Only heartbeats of nodes the Redis cache does not
// know come here: a new node, or every node once after Redis lost its data.
func (s *Server) vouch(ctx context.Context, node, secretHash string) (bool, error) {
	select {
	case <-s.dbReady: // a server just started is still connecting
	case <-ctx.Done():
		return false, errors.New("database not connected yet")
	}
	pool := s.db.Load()
	if pool == nil {
		return false, errors.New("database not connected")
	}
	if _, err := pool.ExecContext(ctx, `INSERT IGNORE INTO node_secrets (node, secret_hash) VALUES (?, ?)`, node, secretHash); err != nil {
		return false, err
	}
	var stored string
	if err := pool.QueryRowContext(ctx, `SELECT secret_hash FROM node_secrets WHERE node = ?`, node).Scan(&stored); err != nil {
		return false, err
	}
	return common.TokenEqual(stored, secretHash), nil
}

func (s *Server) routes() http.Handler {
	r := httpapi.NewEngine()
	r.GET("/health", func(c *gin.Context) {
		c.JSON(http.StatusOK, gin.H{"ok": true, "server": s.cfg.ID, "leader": s.IsLeader()})
	})
	r.GET("/metrics", gin.WrapH(httpapi.MetricsHandler(s.met.reg, s.cfg.ClusterToken)))
	v1 := r.Group("/v1", httpapi.RequireToken(s.cfg.ClusterToken))
	v1.POST("/heartbeat", s.countBeat, s.heartbeat)
	v1.GET(strings.TrimPrefix(envref.Path, "/v1"), s.serveEnv)
	return r
}

// countBeat counts the heartbeat's result by its answer's status.
func (s *Server) countBeat(c *gin.Context) {
	c.Next()
	switch st := c.Writer.Status(); {
	case st < 300:
		s.met.beatOK.Inc()
	case st >= 500:
		s.met.beatError.Inc()
	default:
		s.met.beatRefused.Inc()
	}
}

// heartbeat stores the node's report and answers its assignments. It is the
// hot path of the whole platform: one pipelined Redis round trip, no MySQL,
// and the assignments are passed through without decoding.
func (s *Server) heartbeat(c *gin.Context) {
	// Buffers are reused: a heartbeat is ~12 KB in and ~8 KB out, thousands
	// a second, and garbage is the server's main cost after syscalls.
	bufs := beatBufs.Get().(*beatBuffers)
	defer bufs.put()
	in := &bufs.in
	in.Reset()
	if n := c.Request.ContentLength; n > 0 && n <= maxHeartbeatBytes {
		in.Grow(int(n) + bytes.MinRead)
	}
	_, err := in.ReadFrom(http.MaxBytesReader(c.Writer, c.Request.Body, maxHeartbeatBytes))
	body := in.Bytes()
	if err != nil {
		var tooBig *http.MaxBytesError
		if errors.As(err, &tooBig) {
			httpapi.WriteError(c, common.Errf(http.StatusRequestEntityTooLarge, "too_large", "heartbeat too large"))
			return
		}
		httpapi.WriteError(c, common.Errf(http.StatusBadRequest, "bad_request", "cannot read body"))
		return
	}
	// Only what the server checks is decoded; the rest (the container list,
	// most of the body) is checked for syntax and stored as sent. The leader
	// decodes it, and only when it changed. This is the hot path of the
	// platform: one pass checks the syntax and reads node and addr.
	var hb heartbeatHead
	if err := hb.read(body); err != nil {
		httpapi.WriteError(c, common.Errf(http.StatusBadRequest, "bad_json", "heartbeat is not valid: "+err.Error()))
		return
	}
	if err := checkProtocol(c.GetHeader(common.HeaderProtocol)); err != nil {
		httpapi.WriteError(c, err)
		return
	}
	secret := c.GetHeader(common.HeaderNodeSecret)
	if len(secret) < minSecretLen {
		httpapi.WriteError(c, common.Errf(http.StatusForbidden, "node_identity",
			"heartbeat needs a node secret of at least 16 characters in "+common.HeaderNodeSecret))
		return
	}
	if !nodeIDRE.MatchString(hb.Node) {
		httpapi.WriteError(c, common.Errf(http.StatusBadRequest, "bad_node", "node id must be 1-64 of [A-Za-z0-9._-]"))
		return
	}
	if net.ParseIP(hb.Addr) == nil {
		httpapi.WriteError(c, common.Errf(http.StatusBadRequest, "bad_addr", "addr must be an IP address"))
		return
	}
	// The stored time is when a server received it: agents' clocks may
	// drift. It is appended to the body as it came (the last "at" wins when
	// decoding) rather than re-encoding the whole report: cheaper, and the
	// leader can tell an unchanged report by the bytes before the suffix.
	raw := stampHeartbeatTo(bufs.out, body, time.Now().UTC())
	bufs.out = raw

	// Bounded: with Redis down the agent learns it at once (503) instead of
	// waiting out the client's retries, and changes nothing.
	ctx, cancel := context.WithTimeout(c.Request.Context(), heartbeatTimeout)
	defer cancel()
	secretHash := hashSecret(secret)
	res, err := storeBeat(ctx, s.rdb, s.keys, hb.Node, secretHash, raw, 3*s.cfg.HeartbeatInterval, false)
	if err == nil && len(res) == 1 && res[0] == int64(2) {
		// The cache does not know this node (first beat ever, or Redis lost
		// its data): MySQL decides, and the beat is stored once it agrees.
		var ok bool
		if ok, err = s.vouch(ctx, hb.Node, secretHash); err == nil && ok {
			res, err = storeBeat(ctx, s.rdb, s.keys, hb.Node, secretHash, raw, 3*s.cfg.HeartbeatInterval, true)
		} else if err == nil {
			res = []any{int64(0)}
		} else {
			s.log.Warn("check node identity", "node", hb.Node, "err", err)
			httpapi.WriteError(c, errIdentityUnavailable)
			return
		}
	}
	if err != nil || len(res) == 0 || (len(res) < 2 && res[0] != int64(0)) {
		s.log.Warn("store heartbeat", "node", hb.Node, "err", err)
		s.met.redisErrors.Inc()
		httpapi.WriteError(c, errRedisDown)
		return
	}
	if ok, _ := res[0].(int64); ok != 1 {
		s.log.Warn("heartbeat refused: node secret mismatch", "node", hb.Node, "remote", c.ClientIP())
		httpapi.WriteError(c, common.Errf(http.StatusForbidden, "node_identity",
			"node "+hb.Node+" is registered with another secret (an operator resets it: DELETE FROM node_secrets WHERE node = '"+hb.Node+"'; redis-cli HDEL "+s.secretsKey+" "+hb.Node+")"))
		return
	}
	// A report that changed is news for the leader now; an unchanged one
	// only proves liveness, which the leader's periodic round checks. So a
	// thousand idle nodes do not drive a thousand rounds.
	if changed, _ := res[1].(int64); changed == 1 {
		s.trigger()
	}

	interval := strconv.FormatInt(s.cfg.HeartbeatInterval.Milliseconds(), 10)
	var assignments string
	if len(res) > 2 {
		assignments, _ = res[2].(string)
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
	out := slices.Grow(bufs.out[:0], len(assignments)+64) // raw was sent: reuse it
	out = append(out, `{"known":true,"assignments":`...)
	out = append(out, assignments...)
	out = append(out, `,"interval_ms":`...)
	out = append(out, interval...)
	out = append(out, '}')
	bufs.out = out
	// With its length known net/http writes the answer in one piece instead
	// of chunking anything over 2 KB.
	c.Header("Content-Length", strconv.Itoa(len(out)))
	c.Data(http.StatusOK, "application/json", out)
}

// Heartbeat protocol answers: an agent too old for this server must be
// upgraded (426); one newer than this server means servers were not
// upgraded first (409). Both change nothing: the agent keeps its containers.
var (
	protocolRange = strconv.Itoa(common.MinHeartbeatProtocol) + " to " + strconv.Itoa(common.HeartbeatProtocol)
	currentProto  = strconv.Itoa(common.HeartbeatProtocol)
	previousProto = strconv.Itoa(common.MinHeartbeatProtocol)
)

// checkProtocol accepts the heartbeat protocols this server speaks: the
// current one and the one before it ("" is protocol 1: agents from before
// versioning send no header).
func checkProtocol(h string) error {
	if h == "" {
		h = "1"
	}
	if h == currentProto || h == previousProto {
		return nil // the hot path: no parsing
	}
	v, err := strconv.Atoi(h)
	switch {
	case err != nil:
		return common.Errf(http.StatusBadRequest, "bad_protocol", common.HeaderProtocol+" must be a number")
	case v < common.MinHeartbeatProtocol:
		return common.Errf(http.StatusUpgradeRequired, "protocol_too_old",
			"heartbeat protocol "+h+" is no longer spoken: this server speaks "+protocolRange+"; upgrade the agent")
	case v > common.HeartbeatProtocol:
		return common.Errf(http.StatusConflict, "protocol_too_new",
			"heartbeat protocol "+h+" is newer than this server's ("+protocolRange+"): upgrade servers first, then agents")
	}
	return nil
}

// beatBuffers are one heartbeat's request body and stamped/answer bytes.
type beatBuffers struct {
	in  bytes.Buffer
	out []byte
}

var beatBufs = sync.Pool{New: func() any { return new(beatBuffers) }}

// put returns the buffers to the pool unless a huge heartbeat grew them
// (those are not worth keeping).
func (b *beatBuffers) put() {
	if b.in.Cap() > 1<<20 || cap(b.out) > 1<<20 {
		return
	}
	beatBufs.Put(b)
}
