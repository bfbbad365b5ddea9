package agent

import (
	"bytes"
	"context"
	"encoding/binary"
	"fmt"
	"io"
	"testing"
	"time"

	"github.com/dinp/dinp/common"
	"github.com/dinp/dinp/common/testenv"
	"github.com/docker/docker/api/types/container"
	"github.com/redis/go-redis/v9"
)

// logsDocker answers ContainerLogs with a given stream.
type logsDocker struct {
	*fakeDocker
	out io.ReadCloser
}

func (d logsDocker) ContainerLogs(context.Context, string, container.LogsOptions) (io.ReadCloser, error) {
	return d.out, nil
}

// logFrame is one frame of Docker's multiplexed stream (stdout) holding
// line i with its timestamp.
func logFrame(i int, at time.Time) []byte {
	payload := fmt.Sprintf("%s line-%d\n", at.Add(time.Duration(i)*time.Millisecond).Format(time.RFC3339Nano), i)
	hdr := []byte{1, 0, 0, 0, 0, 0, 0, 0}
	binary.BigEndian.PutUint32(hdr[4:], uint32(len(payload)))
	return append(hdr, payload...)
}

// pipelines counts the pipelines a client sends.
type pipelines struct{ n int }

func (p *pipelines) DialHook(next redis.DialHook) redis.DialHook { return next }
func (p *pipelines) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return next
}
func (p *pipelines) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return func(ctx context.Context, cmds []redis.Cmder) error {
		p.n++
		return next(ctx, cmds)
	}
}

func streamLines(t *testing.T, rdb *redis.Client, key string) []string {
	t.Helper()
	msgs, err := rdb.XRange(context.Background(), key, "-", "+").Result()
	if err != nil {
		t.Fatal(err)
	}
	var lines []string
	for _, m := range msgs {
		e, ok := common.DecodeLogEntry(m.Values)
		if !ok {
			t.Fatalf("undecodable entry %v", m.Values)
		}
		lines = append(lines, e.Line)
	}
	return lines
}

// A chatty container's lines go to Redis a batch per round trip, in order,
// the cursor at the last one shipped; a quiet container's line goes out as
// soon as it is read, without waiting for more.
func TestLogBatching(t *testing.T) {
	rdb, prefix := testenv.Redis(t)
	keys := common.NewKeys(prefix)
	c := common.Container{ID: "c1", App: "chatty", Instance: "i1"}
	start := time.Date(2026, 11, 29, 12, 0, 0, 0, time.UTC)

	t.Run("a burst ships in batches", func(t *testing.T) {
		const n = 1000
		var in bytes.Buffer
		for i := 0; i < n; i++ {
			in.Write(logFrame(i, start))
		}
		counted := redis.NewClient(&redis.Options{Addr: testenv.RedisAddr()})
		defer counted.Close()
		var p pipelines
		counted.AddHook(&p)
		s := newLogShipper(logsDocker{newFakeDocker(time.Now), io.NopCloser(&in)}, counted, keys, "n1", common.DiscardLogger(), start)
		if err := s.follow(context.Background(), c, start); err != nil {
			t.Fatal(err)
		}
		lines := streamLines(t, rdb, keys.Logs(c.App))
		if len(lines) != n {
			t.Fatalf("%d lines in the stream, want %d", len(lines), n)
		}
		for i, l := range lines {
			if l != fmt.Sprintf("line-%d", i) {
				t.Fatalf("line %d is %q: out of order", i, l)
			}
		}
		if max := n/logBatchMax + 2; p.n > max {
			t.Fatalf("%d round trips for %d lines read in one go, want at most %d", p.n, n, max)
		}
		cur, err := rdb.HGet(context.Background(), keys.LogCursors("n1"), c.ID).Result()
		if want := start.Add((n - 1) * time.Millisecond).Format(time.RFC3339Nano); err != nil || cur != want {
			t.Fatalf("cursor %q (%v), want the last line's time %q", cur, err, want)
		}
	})

	t.Run("a quiet line ships at once", func(t *testing.T) {
		q := common.Container{ID: "c2", App: "quiet", Instance: "i2"}
		pr, pw := io.Pipe()
		s := newLogShipper(logsDocker{newFakeDocker(time.Now), pr}, rdb, keys, "n1", common.DiscardLogger(), start)
		done := make(chan error, 1)
		go func() { done <- s.follow(context.Background(), q, start) }()
		pw.Write(logFrame(0, start))
		testenv.WaitFor(t, "the first line shipped while the container is still running", 5*time.Second, func() bool {
			return len(streamLines(t, rdb, keys.Logs(q.App))) == 1
		})
		pw.Write(logFrame(1, start))
		pw.Close()
		if err := <-done; err != nil {
			t.Fatal(err)
		}
		if lines := streamLines(t, rdb, keys.Logs(q.App)); len(lines) != 2 {
			t.Fatalf("lines %q, want 2", lines)
		}
	})
}
