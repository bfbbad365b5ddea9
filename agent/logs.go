package agent

import (
	"bufio"
	"bytes"
	"context"
	"encoding/binary"
	"encoding/json"
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
	since  time.Time // agent start: earlier output was shipped by a previous agent

	followers map[string]*follower
	wg        sync.WaitGroup
}

type follower struct {
	cancel context.CancelFunc
	done   chan struct{}
	ended  time.Time // written before done is closed
}

func newLogShipper(d Docker, rdb *redis.Client, keys common.Keys, log *slog.Logger, since time.Time) *logShipper {
	return &logShipper{docker: d, rdb: rdb, keys: keys, log: log, since: since, followers: map[string]*follower{}}
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
	for id, f := range s.followers {
		if _, ok := running[id]; !ok {
			f.cancel()
			delete(s.followers, id)
		}
	}
	for id, c := range running {
		since := s.since
		if f, ok := s.followers[id]; ok {
			select {
			case <-f.done: // the stream broke while the container runs: resume
				since = f.ended
			default:
				continue
			}
		}
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
	err := s.rdb.XAdd(xctx, &redis.XAddArgs{
		Stream: s.keys.Logs(c.App), MaxLen: logStreamMaxLen, Approx: true, Values: map[string]any{"e": e},
	}).Err()
	if err != nil && ctx.Err() == nil {
		s.log.Debug("ship log line", "app", c.App, "err", err)
	}
}
