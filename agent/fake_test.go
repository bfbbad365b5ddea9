package agent

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	cerrdefs "github.com/containerd/errdefs"
	"github.com/dinp/dinp/common"
	"github.com/dinp/dinp/common/envref"
	"github.com/dinp/dinp/common/httpapi"
	"github.com/docker/docker/api/types/container"
	"github.com/docker/docker/api/types/image"
	"github.com/docker/docker/api/types/network"
	"github.com/docker/docker/client"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
)

// fakeDocker is an in-memory engine with just enough behaviour for the
// converge step: names are unique, removal of a missing container is
// NotFound, and failures can be injected per container name.
type fakeDocker struct {
	mu         sync.Mutex
	now        func() time.Time
	containers map[string]*fakeContainer
	images     map[string]bool
	nextID     int
	failCreate map[string]error // by container name
	// conflictAfterCreate makes ContainerCreate create the container and
	// still answer Conflict, as if an earlier attempt's answer was lost.
	conflictAfterCreate map[string]bool
	ops                 []string                           // mutating calls, "op name"
	stats               map[string]container.StatsResponse // by container id
}

type fakeContainer struct {
	id, name  string
	cfg       *container.Config
	host      *container.HostConfig
	state     string
	hostPort  uint16
	exitCode  int
	startedAt time.Time
}

func newFakeDocker(now func() time.Time) *fakeDocker {
	return &fakeDocker{now: now, containers: map[string]*fakeContainer{}, images: map[string]bool{},
		failCreate: map[string]error{}, conflictAfterCreate: map[string]bool{}}
}

var _ Docker = (*fakeDocker)(nil)

func (f *fakeDocker) record(op, name string) { f.ops = append(f.ops, op+" "+name) }

func (f *fakeDocker) find(idOrName string) *fakeContainer {
	if c, ok := f.containers[idOrName]; ok {
		return c
	}
	for _, c := range f.containers {
		if c.name == strings.TrimPrefix(idOrName, "/") {
			return c
		}
	}
	return nil
}

func notFound(what string) error { return fmt.Errorf("%w: no such %s", cerrdefs.ErrNotFound, what) }

func (f *fakeDocker) ContainerList(_ context.Context, opts container.ListOptions) ([]container.Summary, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []container.Summary
	for _, c := range f.containers {
		match := true
		for _, kv := range opts.Filters.Get("label") {
			k, v, _ := strings.Cut(kv, "=")
			if c.cfg.Labels[k] != v {
				match = false
			}
		}
		if !match {
			continue
		}
		s := container.Summary{ID: c.id, Names: []string{"/" + c.name}, Labels: c.cfg.Labels, State: container.ContainerState(c.state), Image: c.cfg.Image}
		if c.state == common.StateRunning {
			s.Ports = []container.Port{{IP: "127.0.0.1", PrivatePort: 8080, PublicPort: c.hostPort, Type: "tcp"}}
		}
		out = append(out, s)
	}
	return out, nil
}

func (f *fakeDocker) ContainerInspect(_ context.Context, id string) (container.InspectResponse, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	c := f.find(id)
	if c == nil {
		return container.InspectResponse{}, notFound("container")
	}
	started := "0001-01-01T00:00:00Z"
	if !c.startedAt.IsZero() {
		started = c.startedAt.Format(time.RFC3339Nano)
	}
	return container.InspectResponse{
		ContainerJSONBase: &container.ContainerJSONBase{ID: c.id, Name: "/" + c.name, HostConfig: c.host,
			State: &container.State{Status: container.ContainerState(c.state), ExitCode: c.exitCode, StartedAt: started}},
		Config: c.cfg,
	}, nil
}

func (f *fakeDocker) ContainerCreate(_ context.Context, cfg *container.Config, host *container.HostConfig, _ *network.NetworkingConfig, _ *ocispec.Platform, name string) (container.CreateResponse, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.record("create", name)
	if err := f.failCreate[name]; err != nil {
		return container.CreateResponse{}, err
	}
	if !f.images[cfg.Image] {
		return container.CreateResponse{}, notFound("image " + cfg.Image)
	}
	if f.find(name) != nil {
		return container.CreateResponse{}, fmt.Errorf("%w: name %s in use", cerrdefs.ErrConflict, name)
	}
	f.nextID++
	id := fmt.Sprintf("%064d", f.nextID)
	f.containers[id] = &fakeContainer{id: id, name: name, cfg: cfg, host: host, state: common.StateCreated}
	if f.conflictAfterCreate[name] {
		delete(f.conflictAfterCreate, name)
		return container.CreateResponse{}, fmt.Errorf("%w: name %s in use", cerrdefs.ErrConflict, name)
	}
	return container.CreateResponse{ID: id}, nil
}

func (f *fakeDocker) ContainerStart(_ context.Context, id string, _ container.StartOptions) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	c := f.find(id)
	if c == nil {
		return notFound("container")
	}
	f.record("start", c.name)
	if c.state != common.StateRunning {
		c.state = common.StateRunning
		c.hostPort = uint16(32000 + f.nextID)
		c.startedAt = f.now()
	}
	return nil
}

func (f *fakeDocker) ContainerStop(_ context.Context, id string, _ container.StopOptions) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	c := f.find(id)
	if c == nil {
		return notFound("container")
	}
	f.record("stop", c.name)
	c.state = common.StateExited
	return nil
}

func (f *fakeDocker) ContainerRemove(_ context.Context, id string, _ container.RemoveOptions) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	c := f.find(id)
	if c == nil {
		return notFound("container")
	}
	f.record("remove", c.name)
	delete(f.containers, c.id)
	return nil
}

func (f *fakeDocker) ContainerLogs(context.Context, string, container.LogsOptions) (io.ReadCloser, error) {
	return io.NopCloser(strings.NewReader("")), nil
}

// ContainerStats answers f.stats[id] (set by a test), or NotFound.
func (f *fakeDocker) ContainerStats(_ context.Context, id string, _ bool) (container.StatsResponseReader, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	st, ok := f.stats[id]
	if !ok {
		return container.StatsResponseReader{}, notFound("container")
	}
	raw, _ := json.Marshal(st)
	return container.StatsResponseReader{Body: io.NopCloser(strings.NewReader(string(raw)))}, nil
}

func (f *fakeDocker) ImageInspect(_ context.Context, ref string, _ ...client.ImageInspectOption) (image.InspectResponse, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if !f.images[ref] {
		return image.InspectResponse{}, notFound("image")
	}
	return image.InspectResponse{ID: "sha256:" + ref}, nil
}

func (f *fakeDocker) ImagePull(_ context.Context, ref string, opts image.PullOptions) (io.ReadCloser, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.record("pull", ref)
	if opts.RegistryAuth == "" {
		return nil, fmt.Errorf("%w: no auth", cerrdefs.ErrUnauthenticated)
	}
	if strings.Contains(ref, "missing") {
		return io.NopCloser(strings.NewReader(`{"status":"Pulling"}` + "\n" + `{"errorDetail":{"message":"manifest unknown"},"error":"manifest unknown"}`)), nil
	}
	f.images[ref] = true
	return io.NopCloser(strings.NewReader(`{"status":"Pulling"}` + "\n" + `{"status":"Downloaded"}`)), nil
}

// takeOps returns and clears the recorded mutating calls.
func (f *fakeDocker) takeOps() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	ops := f.ops
	f.ops = nil
	return ops
}

// exit makes the container of name exit with code.
func (f *fakeDocker) exit(name string, code int) {
	f.mu.Lock()
	defer f.mu.Unlock()
	c := f.find(name)
	c.state, c.exitCode = common.StateExited, code
}

func (f *fakeDocker) byName(name string) *fakeContainer {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.find(name)
}

// fakeServer answers heartbeats with whatever the test set.
type fakeServer struct {
	mu      sync.Mutex
	status  int
	resp    common.HeartbeatResponse
	got     []common.Heartbeat
	secrets []string // X-Dinp-Node-Secret of each heartbeat
	token   string
	envs    map[string]string // "app/release" → env JSON served at envref.Path
	envGets int
}

func (s *fakeServer) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.URL.Path == envref.Path && r.Method == http.MethodGet {
		s.mu.Lock()
		defer s.mu.Unlock()
		s.envGets++
		q := r.URL.Query()
		env, ok := s.envs[q.Get("app")+"/"+q.Get("release")]
		if httpapi.BearerToken(r) != s.token || r.Header.Get(common.HeaderNodeSecret) == "" || q.Get("node") == "" || !ok {
			http.Error(w, "forbidden", http.StatusForbidden)
			return
		}
		w.Write([]byte(env))
		return
	}
	if r.URL.Path != "/v1/heartbeat" || r.Method != http.MethodPost {
		http.NotFound(w, r)
		return
	}
	if httpapi.BearerToken(r) != s.token {
		http.Error(w, "unauthorized", http.StatusUnauthorized)
		return
	}
	var hb common.Heartbeat
	if err := json.NewDecoder(r.Body).Decode(&hb); err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.got = append(s.got, hb)
	s.secrets = append(s.secrets, r.Header.Get(common.HeaderNodeSecret))
	if s.status != 0 && s.status != http.StatusOK {
		http.Error(w, "unavailable", s.status)
		return
	}
	_ = json.NewEncoder(w).Encode(s.resp)
}

func (s *fakeServer) set(status int, known bool, as ...common.Assignment) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.status, s.resp = status, common.HeartbeatResponse{Known: known, Assignments: as}
}

func (s *fakeServer) last(t *testing.T) common.Heartbeat {
	t.Helper()
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.got) == 0 {
		t.Fatal("no heartbeat received")
	}
	return s.got[len(s.got)-1]
}

func startFakeServer(t *testing.T, token string) (*fakeServer, string) {
	s := &fakeServer{token: token}
	ts := httptest.NewServer(s)
	t.Cleanup(ts.Close)
	return s, ts.URL
}
