package agent

import (
	"bufio"
	"bytes"
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"sync"
	"time"

	"github.com/dinp/dinp/common"
	"github.com/docker/docker/api/types/container"
	"github.com/redis/go-redis/v9"
)

// Log stream limits: the stream is capped (approximately) and a line longer
// than maxLineBytes is cut, so one noisy app cannot fill Redis.
const (
	logStreamMaxLen = 10000
	maxLineBytes    = 16 << 10
)

// logShipper follows the output of every running container of the node and
// appends it to the app's log stream. The loop goroutine owns followers.
type logShipper struct {
	docker Docker
	rdb    *redis.Client
	keys   common.Keys
	log    *slog.Logger
	since  time.Time // agent start: where a container without a cursor starts
	cursor string    // Keys.LogCursors(node)

	followers map[string]*follower
	pruned    bool // cursors of containers gone while no agent ran were removed
	wg        sync.WaitGroup
}

type follower struct {
	cancel context.CancelFunc
	done   chan struct{}
	ended  time.Time // written before done is closed
}

func newLogShipper(d Docker, rdb *redis.Client, keys common.Keys, node string, log *slog.Logger, since time.Time) *logShipper {
	return &logShipper{docker: d, rdb: rdb, keys: keys, log: log, since: since, cursor: keys.LogCursors(node),
		followers: map[string]*follower{}}
}

// resumeAt returns where to resume shipping container id: just after its
// cursor (the last line shipped, by this agent or a previous one), else
// fallback, which then becomes the cursor so that output written before
// the first line is shipped survives an agent restart.
func (s *logShipper) resumeAt(ctx context.Context, id string, fallback time.Time) time.Time {
	rctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	v, err := s.rdb.HGet(rctx, s.cursor, id).Result()
	if err == nil {
		if t, perr := time.Parse(time.RFC3339Nano, v); perr == nil {
			return t.Add(time.Nanosecond) // Docker's since is inclusive
		}
	}
	if errors.Is(err, redis.Nil) {
		s.rdb.HSetNX(rctx, s.cursor, id, fallback.UTC().Format(time.RFC3339Nano))
	}
	return fallback
}

// sync starts a follower per running container and stops those whose
// container no longer runs.
func (s *logShipper) sync(ctx context.Context, containers []common.Container) {
	running := map[string]common.Container{}
	for _, c := range containers {
		if c.State == common.StateRunning && c.App != "" {
			running[c.ID] = c
		}
	}
	var gone []string
	for id, f := range s.followers {
		if _, ok := running[id]; !ok {
			f.cancel()
			delete(s.followers, id)
			gone = append(gone, id)
		}
	}
	if !s.pruned {
		// Containers removed while no agent ran leave cursors behind.
		if ids, err := s.rdb.HKeys(ctx, s.cursor).Result(); err == nil {
			s.pruned = true
			for _, id := range ids {
				if _, ok := running[id]; !ok {
					gone = append(gone, id)
				}
			}
		}
	}
	if len(gone) > 0 {
		s.rdb.HDel(ctx, s.cursor, gone...)
	}
	for id, c := range running {
		fallback := s.since
		if f, ok := s.followers[id]; ok {
			select {
			case <-f.done: // the stream broke while the container runs: resume
				fallback = f.ended
			default:
				continue
			}
		}
		since := s.resumeAt(ctx, id, fallback)
		fctx, cancel := context.WithCancel(ctx)
		f := &follower{cancel: cancel, done: make(chan struct{})}
		s.followers[id] = f
		s.wg.Add(1)
		go func() {
			defer s.wg.Done()
			defer close(f.done)
			err := s.follow(fctx, c, since)
			f.ended = time.Now()
			if err != nil && fctx.Err() == nil {
				s.log.Debug("log follower ended", "instance", c.Instance, "err", err)
			}
		}()
	}
}

func (s *logShipper) stopAll() {
	for id, f := range s.followers {
		f.cancel()
		delete(s.followers, id)
	}
	s.wg.Wait()
}

// follow streams one container's multiplexed output until it ends.
func (s *logShipper) follow(ctx context.Context, c common.Container, since time.Time) error {
	rc, err := s.docker.ContainerLogs(ctx, c.ID, container.LogsOptions{
		ShowStdout: true, ShowStderr: true, Follow: true, Timestamps: true,
		Since: fmt.Sprintf("%d.%09d", since.Unix(), since.Nanosecond()),
	})
	if err != nil {
		return fmt.Errorf("logs %s: %w", short(c.ID), err)
	}
	defer rc.Close() // a cancelled ctx also aborts a blocked read
	return demux(bufio.NewReader(rc), func(stream string, line []byte) {
		s.ship(ctx, c, stream, line)
	})
}

// demux splits Docker's multiplexed log stream (8-byte frame headers:
// stream, 3 zero bytes, big-endian size) into lines per stream.
func demux(r io.Reader, emit func(stream string, line []byte)) error {
	var hdr [8]byte
	pending := map[string][]byte{}
	flush := func(stream string, final bool) {
		buf := pending[stream]
		for {
			i := bytes.IndexByte(buf, '\n')
			if i < 0 {
				break
			}
			emit(stream, buf[:i])
			buf = buf[i+1:]
		}
		if len(buf) > maxLineBytes || (final && len(buf) > 0) {
			emit(stream, buf)
			buf = nil
		}
		pending[stream] = append([]byte(nil), buf...)
	}
	for {
		if _, err := io.ReadFull(r, hdr[:]); err != nil {
			flush("stdout", true)
			flush("stderr", true)
			if err == io.EOF || err == io.ErrUnexpectedEOF {
				return nil
			}
			return err
		}
		stream := "stdout"
		if hdr[0] == 2 {
			stream = "stderr"
		}
		size := binary.BigEndian.Uint32(hdr[4:])
		payload := make([]byte, size)
		if _, err := io.ReadFull(r, payload); err != nil {
			return err
		}
		pending[stream] = append(pending[stream], payload...)
		flush(stream, false)
	}
}

// ship appends one line ("<RFC3339Nano timestamp> <text>") to the app's
// stream. A failure drops the line: logs must never block the node.
func (s *logShipper) ship(ctx context.Context, c common.Container, stream string, line []byte) {
	at := time.Now().UTC()
	if i := bytes.IndexByte(line, ' '); i > 0 {
		if t, err := time.Parse(time.RFC3339Nano, string(line[:i])); err == nil {
			at, line = t.UTC(), line[i+1:]
		}
	}
	line = bytes.TrimRight(line, "\r")
	if len(line) > maxLineBytes {
		line = line[:maxLineBytes]
	}
	e, _ := json.Marshal(common.LogEntry{Source: "app", Instance: c.Instance, Stream: stream, Line: string(line), At: at})
	xctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	// The line and the container's cursor in one round trip.
	pipe := s.rdb.Pipeline()
	pipe.XAdd(xctx, &redis.XAddArgs{
		Stream: s.keys.Logs(c.App), MaxLen: logStreamMaxLen, Approx: true, Values: map[string]any{"e": e},
	})
	pipe.HSet(xctx, s.cursor, c.ID, at.Format(time.RFC3339Nano))
	_, err := pipe.Exec(xctx)
	if err != nil && ctx.Err() == nil {
		s.log.Debug("ship log line", "app", c.App, "err", err)
	}
}
