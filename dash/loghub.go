package dash

import (
	"context"
	"errors"
	"log/slog"
	"net/http"
	"strconv"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/dinp/dinp/common"
)

// DefaultMaxFollowsPerUser bounds one user's open log follows.
const DefaultMaxFollowsPerUser = 10

const (
	// logBlock bounds one XREAD BLOCK, so a follower notices a closed
	// client or a finished build within that time.
	logBlock = 2 * time.Second
	// doneEvery is how often a follow that ends with its build or task
	// asks whether it has (a follow without an end only checks its client).
	doneEvery = 500 * time.Millisecond
)

// followBuffer is how many batches a follower may lag behind before it is
// cut off (its client reconnects); a slow reader never slows the feed.
const followBuffer = 256

// logHub serves every log follow of dash: one reader per followed stream
// (XREAD BLOCK on a Redis client of its own, so follows never hold the
// connections API requests need) fans each batch out to all followers of
// that stream. Each user has at most perUser follows open.
type logHub struct {
	rdb     *redis.Client
	log     *slog.Logger
	perUser int
	ctx     context.Context // the hub's life; feeds stop when it ends
	wg      sync.WaitGroup  // feed goroutines

	mu    sync.Mutex
	feeds map[string]*logFeed // guarded by mu; by stream key
	users map[int64]int       // guarded by mu; open follows per user
}

// logFeed is the reader of one stream.
type logFeed struct {
	key    string
	cursor string // guarded by hub.mu: id of the newest entry fanned out
	subs   map[*logSub]struct{}
	cancel context.CancelFunc
}

// logSub is one follower: it receives every batch after start.
type logSub struct {
	hub   *logHub
	feed  *logFeed
	user  int64
	start string
	ch    chan []redis.XMessage // closed when the follower is cut off
	once  sync.Once
}

var errTooManyFollows = common.Errf(http.StatusTooManyRequests, "too_many_follows",
	"too many log follows open for this user; close one first")

func newLogHub(ctx context.Context, rdb *redis.Client, log *slog.Logger, perUser int) *logHub {
	return &logHub{rdb: rdb, log: log, perUser: perUser, ctx: ctx, feeds: map[string]*logFeed{}, users: map[int64]int{}}
}

// join makes user a follower of stream key. The follower gets every entry
// newer than the stream's newest at the time of joining (sub.start).
func (h *logHub) join(ctx context.Context, user int64, key string) (*logSub, error) {
	h.mu.Lock()
	if h.users[user] >= h.perUser {
		h.mu.Unlock()
		return nil, errTooManyFollows
	}
	f := h.feeds[key]
	h.mu.Unlock()
	cursor := ""
	if f == nil {
		// The newest id now: the feed delivers everything after it.
		rctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		msgs, err := h.rdb.XRevRangeN(rctx, key, "+", "-", 1).Result()
		cancel()
		if err != nil {
			return nil, err
		}
		cursor = "0-0"
		if len(msgs) > 0 {
			cursor = msgs[0].ID
		}
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.users[user] >= h.perUser {
		return nil, errTooManyFollows
	}
	f = h.feeds[key]
	if f == nil {
		fctx, cancel := context.WithCancel(h.ctx)
		f = &logFeed{key: key, cursor: cursor, subs: map[*logSub]struct{}{}, cancel: cancel}
		h.feeds[key] = f
		h.wg.Add(1)
		go h.run(fctx, f)
	}
	s := &logSub{hub: h, feed: f, user: user, start: f.cursor, ch: make(chan []redis.XMessage, followBuffer)}
	f.subs[s] = struct{}{}
	h.users[user]++
	return s, nil
}

// leave ends a follow; the last follower of a stream stops its reader.
func (s *logSub) leave() {
	s.once.Do(func() {
		h := s.hub
		h.mu.Lock()
		defer h.mu.Unlock()
		if _, ok := s.feed.subs[s]; ok {
			delete(s.feed.subs, s)
			close(s.ch)
		}
		if h.users[s.user]--; h.users[s.user] <= 0 {
			delete(h.users, s.user)
		}
		if len(s.feed.subs) == 0 && h.feeds[s.feed.key] == s.feed {
			delete(h.feeds, s.feed.key)
			s.feed.cancel()
		}
	})
}

// run reads one stream and fans its entries out until it has no follower
// or the hub stops.
func (h *logHub) run(ctx context.Context, f *logFeed) {
	defer h.wg.Done()
	h.mu.Lock()
	cursor := f.cursor
	h.mu.Unlock()
	for ctx.Err() == nil {
		res, err := h.rdb.XRead(ctx, &redis.XReadArgs{Streams: []string{f.key, cursor}, Count: 500, Block: logBlock}).Result()
		switch {
		case errors.Is(err, redis.Nil):
			continue
		case err != nil:
			if ctx.Err() != nil {
				return
			}
			h.log.Debug("follow logs", "stream", f.key, "err", err)
			if !common.Sleep(ctx, time.Second) {
				return
			}
			continue
		}
		for _, st := range res {
			if len(st.Messages) == 0 {
				continue
			}
			cursor = st.Messages[len(st.Messages)-1].ID
			h.mu.Lock()
			f.cursor = cursor
			for s := range f.subs {
				select {
				case s.ch <- st.Messages:
				default:
					// Too slow: cut it off rather than hold everyone up.
					delete(f.subs, s)
					close(s.ch)
				}
			}
			h.mu.Unlock()
		}
	}
}

// stop ends every feed and waits for them.
func (h *logHub) stop() {
	h.mu.Lock()
	for _, f := range h.feeds {
		f.cancel()
	}
	h.mu.Unlock()
	h.wg.Wait()
}

// idLess compares two stream ids ("ms-seq").
func idLess(a, b string) bool {
	am, as := splitID(a)
	bm, bs := splitID(b)
	return am < bm || (am == bm && as < bs)
}

func splitID(id string) (uint64, uint64) {
	for i := 0; i < len(id); i++ {
		if id[i] == '-' {
			ms, _ := strconv.ParseUint(id[:i], 10, 64)
			seq, _ := strconv.ParseUint(id[i+1:], 10, 64)
			return ms, seq
		}
	}
	ms, _ := strconv.ParseUint(id, 10, 64)
	return ms, 0
}

// follow passes the entries of s newer than last that match f to emit
// until ctx ends, emit fails, the follower is cut off, or done() reports
// true (checked every doneEvery). It returns the id of the newest entry
// seen.
func (s *logSub) follow(ctx context.Context, last string, f logFilter, emit func([]common.LogEntry) error, done func() bool) string {
	tick := time.NewTicker(doneEvery)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return last
		case <-tick.C:
			if done != nil && done() {
				return last
			}
		case msgs, ok := <-s.ch:
			if !ok {
				return last
			}
			fresh := msgs[:0:0]
			for _, m := range msgs {
				if idLess(last, m.ID) {
					fresh = append(fresh, m)
				}
			}
			if len(fresh) == 0 {
				continue
			}
			last = fresh[len(fresh)-1].ID
			if es := decodeEntries(fresh, f); len(es) > 0 {
				if emit(es) != nil {
					return last
				}
			}
		}
	}
}
