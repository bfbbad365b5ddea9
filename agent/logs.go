package agent

import (
	"bufio"
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"strings"
	"sync"
	"time"

	"github.com/dinp/dinp/common"
	"github.com/dinp/dinp/common/redisx"
	"github.com/docker/docker/api/types/container"
	"github.com/redis/go-redis/v9"
)

// A line longer than maxLineBytes is cut (and the stream is capped at
// common.LogStreamMaxLen), so one noisy app cannot fill Redis.
const (
	maxLineBytes = 16 << 10
	// logDrainTimeout bounds how long removing a container waits for its
	// output to be shipped.
	logDrainTimeout = 10 * time.Second
)

// logShipper follows the output of every container of the node, running or
// ended, and appends it to the app's log stream. The loop goroutine starts
// and stops followers; operations that remove a container first wait (drain)
// for its follower to have shipped everything, so output of a container that
// lived for milliseconds is shipped before the container goes.
type logShipper struct {
	docker Docker
	rdb    *redis.Client
	keys   common.Keys
	log    *slog.Logger
	since  time.Time // agent start: where a container without a cursor starts
	cursor string    // Keys.LogCursors(node)

	mu        sync.Mutex           // guards followers (the loop writes, drain reads)
	followers map[string]*follower // by container id, until the container is gone
	pruned    bool                 // cursors of containers gone while no agent ran were removed (loop only)
	wg        sync.WaitGroup
}

type follower struct {
	cancel  context.CancelFunc
	done    chan struct{}
	running bool      // the container ran when the follower started
	ended   time.Time // written before done is closed
	err     error     // written before done is closed
}

// exitField is the cursor hash field that records that a container's end
// was announced in its app's log stream, so it is announced once.
func exitField(id string) string { return "exit:" + id }

// followable reports states whose output can be read: an ended container's
// log is complete, a running one's is followed until it ends.
func followable(state string) bool {
	switch state {
	case common.StateRunning, common.StateExited, common.StateDead, common.StatePaused, common.StateRestarting:
		return true
	}
	return false
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

// sync starts a follower per container whose output is not all shipped yet
// and forgets those whose container is gone. A follower of a container that
// stopped is left to read the rest: Docker ends the stream after the last
// line, and the follower is done.
func (s *logShipper) sync(ctx context.Context, containers []common.Container) {
	present := map[string]common.Container{}
	for _, c := range containers {
		if c.App != "" {
			present[c.ID] = c
		}
	}
	var gone []string
	s.mu.Lock()
	for id, f := range s.followers {
		if _, ok := present[id]; !ok {
			f.cancel()
			delete(s.followers, id)
			gone = append(gone, id, exitField(id))
		}
	}
	s.mu.Unlock()
	if !s.pruned {
		// Containers removed while no agent ran leave cursors behind.
		if fields, err := s.rdb.HKeys(ctx, s.cursor).Result(); err == nil {
			s.pruned = true
			for _, field := range fields {
				if _, ok := present[strings.TrimPrefix(field, "exit:")]; !ok {
					gone = append(gone, field)
				}
			}
		}
	}
	if len(gone) > 0 {
		s.rdb.HDel(ctx, s.cursor, gone...)
	}
	for _, c := range present {
		if followable(c.State) {
			s.start(ctx, c)
		}
	}
}

// start makes sure container c has a follower that ships what it has not
// yet shipped, and returns it. A follower whose stream broke while the
// container runs is replaced; one that read an ended container to its end
// is kept (its output is all shipped).
func (s *logShipper) start(ctx context.Context, c common.Container) *follower {
	s.mu.Lock()
	defer s.mu.Unlock()
	fallback := s.since
	if f, ok := s.followers[c.ID]; ok {
		select {
		case <-f.done:
			if f.err == nil && (!f.running || c.State != common.StateRunning) {
				return f // read to its end
			}
			fallback = f.ended
		default:
			return f
		}
	}
	since := s.resumeAt(ctx, c.ID, fallback)
	fctx, cancel := context.WithCancel(ctx)
	f := &follower{cancel: cancel, done: make(chan struct{}), running: c.State == common.StateRunning}
	s.followers[c.ID] = f
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		defer close(f.done)
		f.err = s.follow(fctx, c, since)
		f.ended = time.Now()
		if f.err != nil && fctx.Err() == nil {
			s.log.Debug("log follower ended", "instance", c.Instance, "err", f.err)
		}
	}()
	return f
}

// drain waits until every line container c wrote is shipped. c must have
// ended (or be about to: the caller stopped it). Called from tasks before a
// container is removed; ctx bounds the wait.
func (s *logShipper) drain(ctx context.Context, c common.Container) {
	c.State = common.StateExited
	for range 3 { // a broken stream is resumed from the cursor
		f := s.start(ctx, c)
		select {
		case <-f.done:
		case <-ctx.Done():
			return
		}
		if f.err == nil {
			return
		}
	}
}

// announceExit ships the platform's line saying how container c's process
// ended, once per container (also across agent restarts).
func (s *logShipper) announceExit(ctx context.Context, c common.Container, e common.Exit) {
	rctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	first, err := s.rdb.HSetNX(rctx, s.cursor, exitField(c.ID), "1").Result()
	if err != nil || !first {
		return
	}
	at := e.At
	if at.IsZero() {
		at = time.Now().UTC()
	}
	line := fmt.Sprintf("instance %s %s", c.Instance, e.Reason())
	s.appendTo(rctx, s.keys.Logs(c.App), common.LogEntry{Source: common.LogSourcePlatform, Instance: c.Instance, Line: line, At: at})
}

func (s *logShipper) stopAll() {
	s.mu.Lock()
	for id, f := range s.followers {
		f.cancel()
		delete(s.followers, id)
	}
	s.mu.Unlock()
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
	b := &logBatch{s: s, ctx: ctx, c: c, key: s.keys.Logs(c.App)}
	if isTaskContainer(c) {
		b.key = s.keys.TaskLogs(c.Instance)
	}
	br := bufio.NewReaderSize(rc, 64<<10)
	err = demux(br, b.add, func() {
		if br.Buffered() == 0 {
			b.flush() // before a read that may wait: nothing waits on the container's next line
		}
	})
	b.flush()
	return err
}

// demux splits Docker's multiplexed log stream (8-byte frame headers:
// stream, 3 zero bytes, big-endian size) into lines per stream. Before
// reading each frame it calls between (nil: nothing).
func demux(r io.Reader, emit func(stream string, line []byte), between func()) error {
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
		if between != nil {
			between()
		}
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

// logBatch ships one container's lines ("<RFC3339Nano timestamp> <text>")
// to its stream: the lines read in one go (up to logBatchMax) are appended
// in one round trip, with the container's cursor moved to the last of them,
// so a chatty app costs a round trip per batch, not per line, and a quiet
// one's line goes out as soon as it is read. A failure drops the batch:
// logs must never block the node.
type logBatch struct {
	s       *logShipper
	ctx     context.Context
	c       common.Container
	key     string
	entries []common.LogEntry
}

// logBatchMax bounds the lines shipped in one round trip.
const logBatchMax = 256

func (b *logBatch) add(stream string, line []byte) {
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
	b.entries = append(b.entries, common.LogEntry{Source: common.LogSourceApp, Instance: b.c.Instance, Stream: stream, Line: string(line), At: at})
	if len(b.entries) >= logBatchMax {
		b.flush()
	}
}

func (b *logBatch) flush() {
	if len(b.entries) == 0 {
		return
	}
	xctx, cancel := context.WithTimeout(b.ctx, 2*time.Second)
	defer cancel()
	last := b.entries[len(b.entries)-1].At
	b.s.append(xctx, b.key, b.entries, func(pipe redis.Pipeliner) {
		pipe.HSet(xctx, b.s.cursor, b.c.ID, last.Format(time.RFC3339Nano))
	})
	clear(b.entries)
	b.entries = b.entries[:0]
}

// appendTo adds e to the stream key (a task's output: kept for
// taskLogTTL after its last line).
func (s *logShipper) appendTo(ctx context.Context, key string, e common.LogEntry) {
	s.append(ctx, key, []common.LogEntry{e}, nil)
}

// taskLogTTL is how long a task's log stream outlives its last line.
const taskLogTTL = 7 * 24 * time.Hour

// append adds entries to the stream key in one round trip; with also, more
// commands go in it (the container's cursor moves with its lines).
func (s *logShipper) append(ctx context.Context, key string, entries []common.LogEntry, also func(redis.Pipeliner)) {
	pipe := s.rdb.Pipeline()
	for _, e := range entries {
		redisx.AppendLogTo(ctx, pipe, key, e)
	}
	if strings.Contains(key, ":task-logs:") {
		pipe.Expire(ctx, key, taskLogTTL)
	}
	if also != nil {
		also(pipe)
	}
	if _, err := pipe.Exec(ctx); err != nil && ctx.Err() == nil {
		s.log.Debug("ship log line", "stream", key, "err", err)
	}
}
