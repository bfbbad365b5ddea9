package dash

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"regexp"
	"strconv"
	"strings"
	"time"

	"github.com/dinp/dinp/common"
	"github.com/dinp/dinp/common/appmetrics"
	"github.com/dinp/dinp/common/redisx"
	"github.com/dinp/dinp/dash/api"
)

func (s *Service) appView(a appRow) App {
	return App{
		Name: a.Name, Team: a.Team, Instances: a.Instances, MemoryMB: a.MemoryMB, CPUShares: a.CPUShares,
		Health: a.Health, Env: a.Env, CurrentRelease: a.CurrentRelease,
		URL:       "http://" + common.AppHost(a.Name, s.cfg.Base.Domain),
		AllowRoot: a.AllowRoot,
	}
}

// newApp validates and creates an app (API and web form).
func (s *Service) newApp(ctx context.Context, u User, req CreateAppRequest) (appRow, error) {
	if !common.ValidAppName(req.Name) {
		return appRow{}, invalid("invalid_name", "app name must be a DNS label: 1-63 of a-z, 0-9 and '-', not starting or ending with '-'")
	}
	if err := validateLimits(req.Instances, req.MemoryMB, req.CPUShares); err != nil {
		return appRow{}, err
	}
	if !validHealthPath(req.HealthPath) {
		return appRow{}, invalid("invalid_health_path", "health_path must start with / and contain no spaces")
	}
	if err := validateEnv(req.Env, nil); err != nil {
		return appRow{}, err
	}
	teamID, team, err := s.store.teamForUser(ctx, u, req.Team)
	if err != nil {
		return appRow{}, err
	}
	a := appRow{
		Name: req.Name, TeamID: teamID, Team: team, Instances: 1, MemoryMB: defaultMemory, CPUShares: defaultCPU,
		Health: common.HealthConfig{Path: req.HealthPath}, Env: req.Env,
	}
	if a.Env == nil {
		a.Env = map[string]string{}
	}
	if req.Instances != nil {
		a.Instances = *req.Instances
	}
	if req.MemoryMB != nil {
		a.MemoryMB = *req.MemoryMB
	}
	if req.CPUShares != nil {
		a.CPUShares = *req.CPUShares
	}
	if err := s.store.createApp(ctx, a, u.Name); err != nil {
		return appRow{}, err
	}
	s.dropLogs(ctx, a.Name) // lines a deleted app of this name may have left
	s.log.Info("app created", "app", a.Name, "team", team, "user", u.Name)
	return a, nil
}

// appDetail is an app with its current release and instances.
func (s *Service) appDetail(ctx context.Context, a appRow) (AppDetail, error) {
	out := AppDetail{App: s.appView(a), Instances: []Instance{}}
	if a.CurrentRelease != nil {
		r, err := s.store.release(ctx, a.ID, *a.CurrentRelease)
		if err != nil && !errors.Is(err, errNotFound) {
			return AppDetail{}, err
		}
		if err == nil {
			out.Release = &r
		}
	}
	rows, err := s.store.instances(ctx, a.ID)
	if err != nil {
		return AppDetail{}, err
	}
	health := s.health(ctx, rows)
	for i, r := range rows {
		in := Instance{
			ID: r.ID, Index: r.Index, Release: r.Release, Node: r.Node, State: r.State, Health: health[i],
			Restarts: r.Restarts, Error: r.Error, StartedAt: r.StartedAt, LastExit: r.LastExit, LastExitAt: r.LastExitAt,
		}
		if r.Address != "" && r.HostPort > 0 {
			in.Addr = r.Address + ":" + strconv.Itoa(r.HostPort)
		}
		out.Instances = append(out.Instances, in)
	}
	return out, nil
}

// health reads the hm verdict of each instance; anything missing or
// unreadable (Redis down) is "unknown", never an error for the caller.
func (s *Service) health(ctx context.Context, rows []instanceRow) []string {
	out := make([]string, len(rows))
	for i := range out {
		out[i] = "unknown"
	}
	if len(rows) == 0 {
		return out
	}
	ids := make([]string, len(rows))
	for i, r := range rows {
		ids[i] = r.ID
	}
	hctx, cancel := context.WithTimeout(ctx, 500*time.Millisecond)
	defer cancel()
	known, err := redisx.ReadHealth(hctx, s.rdb, s.keys, ids)
	if err != nil {
		s.log.Debug("read health", "err", err)
		return out
	}
	for i, id := range ids {
		if hs, ok := known[id]; ok && hs.Status != "" {
			out[i] = hs.Status
		}
	}
	return out
}

// applyChange stores a validated change and tells the leader.
func (s *Service) applyChange(ctx context.Context, a appRow, u User, ch appChange, kind string) (appRow, *Release, error) {
	updated, rel, err := s.store.updateApp(ctx, a.ID, ch, u.Name, kind)
	if err != nil {
		return appRow{}, nil, err
	}
	s.publishDesired(ctx, a.Name)
	s.log.Info("app changed", "app", a.Name, "kind", kind, "user", u.Name)
	return updated, rel, nil
}

// doRollback makes a new release from an old one (0: the one before the
// current) and tells the leader.
func (s *Service) doRollback(ctx context.Context, a appRow, u User, version int) (Release, error) {
	rel, err := s.store.rollback(ctx, a.ID, version, u.Name)
	if err != nil {
		return Release{}, err
	}
	s.publishDesired(ctx, a.Name)
	s.log.Info("rolled back", "app", a.Name, "release", rel.Version, "user", u.Name)
	return rel, nil
}

// removeApp deletes an app; the leader then stops its instances and removes
// its routes.
func (s *Service) removeApp(ctx context.Context, a appRow, u User) error {
	if err := s.store.deleteApp(ctx, a.ID); err != nil {
		return err
	}
	s.dropLogs(ctx, a.Name)
	s.publishDesired(ctx, a.Name)
	s.log.Info("app deleted", "app", a.Name, "user", u.Name)
	return nil
}

// publishDesired tells the leader server that an app's desired state
// changed. Best effort: the leader also reconciles periodically.
func (s *Service) publishDesired(ctx context.Context, app string) {
	pctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 2*time.Second)
	defer cancel()
	if err := s.rdb.Publish(pctx, s.keys.DesiredChanged(), app).Err(); err != nil {
		s.log.Warn("publish desired change", "app", app, "err", err)
	}
}

// setHealth validates and stores an app's health check; the server copies
// it into the app's routes, where hm reads it.
func (s *Service) setHealth(ctx context.Context, a appRow, u User, h common.HealthConfig) error {
	if err := validateHealth(h); err != nil {
		return err
	}
	raw, _ := json.Marshal(h)
	if err := s.store.setHealth(ctx, a.ID, string(raw), "health check set by "+u.Name+": "+string(raw)); err != nil {
		return err
	}
	s.publishDesired(ctx, a.Name)
	return nil
}

// appMetrics reads an app's metrics over window ("1h", "6h" or "24h") for
// the API, the web page and the CLI: one round trip to Redis for the
// series, one query for the events.
func (s *Service) appMetrics(ctx context.Context, a appRow, window string) (api.AppMetrics, error) {
	win, ok := metricWindows[window]
	if !ok {
		return api.AppMetrics{}, common.Errf(http.StatusBadRequest, "invalid_window", fmt.Sprintf("window %q: want 1h, 6h or 24h", window))
	}
	now := time.Now()
	w, err := appmetrics.NewStore(s.rdb, s.keys).Read(ctx, a.Name, win.step, win.steps, now)
	if err != nil {
		if ctx.Err() != nil {
			return api.AppMetrics{}, ctx.Err()
		}
		s.log.Warn("metrics not read", "app", a.Name, "err", err)
		return api.AppMetrics{}, errMetricsUnavailable
	}
	m := metricsOf(w)
	m.App, m.Window = a.Name, window
	since := time.Unix(w.Time[0], 0)
	if m.Events, err = s.store.eventsSince(ctx, a.ID, since, maxMetricEvents); err != nil {
		return api.AppMetrics{}, err
	}
	return m, nil
}

// requestSparklines returns, for each of apps, its requests per second over
// the last hour at 1 min resolution (60 values, oldest first), for the
// sparklines of the app list and the Cluster page.
func (s *Service) requestSparklines(ctx context.Context, apps []string) (map[string][]float64, error) {
	rates, err := appmetrics.NewStore(s.rdb, s.keys).RequestRates(ctx, apps, 60, time.Now())
	if err != nil {
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		s.log.Warn("request rates not read", "apps", len(apps), "err", err)
		return nil, errMetricsUnavailable
	}
	return rates, nil
}

// releaseStatus judges release version of app a from the instance rows,
// hm's verdicts, the leader's rollback events and the log stream, with
// the leader's own rule (common.CannotServe).
func (s *Service) releaseStatus(ctx context.Context, a appRow, version int) (ReleaseStatus, error) {
	if _, err := s.store.release(ctx, a.ID, version); err != nil {
		if errors.Is(err, errNotFound) {
			return ReleaseStatus{}, common.Errf(http.StatusNotFound, "not_found", fmt.Sprintf("release v%d not found", version))
		}
		return ReleaseStatus{}, err
	}
	st := ReleaseStatus{Release: version, Wanted: a.Instances, State: ReleaseDeploying}
	if a.CurrentRelease != nil {
		st.CurrentRelease = *a.CurrentRelease
	}
	passed := false // its release phase succeeded
	if st.CurrentRelease < version {
		// A release with a release phase becomes current only when it
		// succeeds; until then, and when it failed, the task says why.
		t, err := s.store.releaseTask(ctx, a, version)
		switch {
		case err == nil && !common.TaskDone(t.State):
			st.ReleasePhase, st.Task = t.State, t.ID
			return st, nil
		case err == nil && t.State != common.TaskSucceeded:
			st.ReleasePhase, st.Task, st.Instance = t.State, t.ID, t.ID
			st.State = ReleaseFailed
			st.Reason = fmt.Sprintf("release v%d not rolled out: release phase %q %s", version, releaseCommandText(t), common.TaskOutcome(t.State, t.Reason, t.ExitCode))
			lctx, cancel := context.WithTimeout(ctx, time.Second)
			st.Lines, _ = redisx.StreamTail(lctx, s.rdb, s.keys.TaskLogs(t.ID), t.ID, common.EvidenceLines, 2000)
			cancel()
			return st, nil
		case err == nil:
			st.ReleasePhase, st.Task = t.State, t.ID
			passed = true
		case !errors.Is(err, errNotFound):
			return ReleaseStatus{}, err
		}
	}
	if st.CurrentRelease != version {
		evs, err := s.store.events(ctx, a.ID, listLimit)
		if err != nil {
			return ReleaseStatus{}, err
		}
		// The leader's rollback reasons start with "release vN ".
		for _, e := range evs {
			if e.Kind == "rollback" && strings.HasPrefix(e.Message, fmt.Sprintf("release v%d ", version)) {
				st.State, st.Reason, st.Instance, st.Lines = ReleaseRolledBack, e.Message, e.Instance, e.Evidence
				return st, nil
			}
		}
		if passed && st.CurrentRelease < version {
			// The leader made it current a moment after a was read.
			return st, nil
		}
		st.State = ReleaseSuperseded
		if st.CurrentRelease < version {
			st.State, st.Reason = ReleaseRolledBack, fmt.Sprintf("the current release is v%d", st.CurrentRelease)
		}
		return st, nil
	}

	rows, err := s.store.instances(ctx, a.ID)
	if err != nil {
		return ReleaseStatus{}, err
	}
	var mine []instanceRow
	ids := []string{}
	for _, r := range rows {
		if r.Release == version && r.State != common.InstanceStopping {
			mine = append(mine, r)
			ids = append(ids, r.ID)
		}
	}
	hctx, cancel := context.WithTimeout(ctx, time.Second)
	health, err := redisx.ReadHealth(hctx, s.rdb, s.keys, ids)
	cancel()
	if err != nil {
		health = map[string]common.HealthStatus{} // unknown: nothing is judged healthy or failed by hm
	}
	now := time.Now()
	broken, why, first := 0, "", ""
	for _, r := range mine {
		hs := health[r.ID]
		if r.State == "running" && hs.Status == common.Healthy {
			st.Healthy++
		}
		if reason, ok := common.CannotServe(a.Health, r.Restarts, r.LastExit, r.Error, r.CreatedAt, hs, now); ok {
			broken++
			if why == "" {
				why, first = fmt.Sprintf("instance %s %s", r.ID, reason), r.ID
			}
		}
	}
	switch {
	case st.Healthy >= st.Wanted: // scaled to 0: nothing to wait for
		st.State = ReleaseHealthy
	case len(mine) > 0 && broken == len(mine):
		st.State, st.Reason, st.Instance = ReleaseFailed, fmt.Sprintf("release v%d cannot become healthy: every instance failed (%s)", version, why), first
		lctx, cancel := context.WithTimeout(ctx, time.Second)
		st.Lines, _ = redisx.InstanceTail(lctx, s.rdb, s.keys, a.Name, first, common.EvidenceLines, 2000)
		cancel()
	}
	return st, nil
}

// errAdminOnly refuses an operation reserved to admins.
var errAdminOnly = common.Errf(http.StatusForbidden, "forbidden", "only admins may do this")

// requireAdmin is the one check of admin-only operations; the handler
// groups also run it before they parse a request, so a non-admin learns
// nothing from a malformed one.
func (s *Service) requireAdmin(u User) error {
	if !u.IsAdmin {
		return errAdminOnly
	}
	return nil
}

// app is the authorization point of every app operation: u's app called
// name, or errNotFound for an app of another team (exactly like a missing
// one); admins see every app. The app-scoped methods below take the
// appRow it returns.
func (s *Service) app(ctx context.Context, u User, name string) (appRow, error) {
	return s.store.app(ctx, u, name)
}

// apps lists the apps u may see, as the app list shows them.
func (s *Service) apps(ctx context.Context, u User) ([]AppSummary, error) {
	rows, err := s.store.apps(ctx, u)
	if err != nil {
		return nil, err
	}
	out := make([]AppSummary, 0, len(rows))
	for _, a := range rows {
		out = append(out, summarize(s.appView(a), a))
	}
	return out, nil
}

// scale changes a's limits (those set).
func (s *Service) scale(ctx context.Context, u User, a appRow, instances, memoryMB, cpuShares *int) (appRow, *Release, error) {
	if err := validateLimits(instances, memoryMB, cpuShares); err != nil {
		return appRow{}, nil, err
	}
	return s.applyChange(ctx, a, u, appChange{Instances: instances, MemoryMB: memoryMB, CPUShares: cpuShares}, "scale")
}

// setEnv sets and unsets env variables of a (a new release).
func (s *Service) setEnv(ctx context.Context, u User, a appRow, set map[string]string, unset []string) (appRow, *Release, error) {
	if err := validateEnv(set, unset); err != nil {
		return appRow{}, nil, err
	}
	for _, k := range unset {
		if _, ok := set[k]; ok {
			return appRow{}, nil, invalid("invalid_env", k+" is both set and unset")
		}
	}
	return s.applyChange(ctx, a, u, appChange{Set: set, Unset: unset}, "env")
}

// setRoot lets an admin allow or revoke root for one app.
func (s *Service) setRoot(ctx context.Context, u User, a appRow, allow bool) (appRow, *Release, error) {
	if err := s.requireAdmin(u); err != nil {
		return appRow{}, nil, err
	}
	return s.applyChange(ctx, a, u, appChange{Root: &allow}, "root")
}

// releases are a's newest releases, newest first.
func (s *Service) releases(ctx context.Context, a appRow, limit int) ([]Release, error) {
	return s.store.releases(ctx, a.ID, limit)
}

// events are a's newest events, newest first.
func (s *Service) events(ctx context.Context, a appRow, limit int) ([]Event, error) {
	return s.store.events(ctx, a.ID, limit)
}

// appOverview is everything the app page shows besides the charts.
type appOverview struct {
	AppDetail
	Releases []Release
	Builds   []BuildInfo
	Events   []Event
	Domains  []Domain
	Tasks    []Task
	Logs     []string // the newest lines, formatted
}

// overview reads a's page: detail, recent releases, events, domains,
// builds, tasks and log lines (logs are best effort).
func (s *Service) overview(ctx context.Context, a appRow) (appOverview, error) {
	det, err := s.appDetail(ctx, a)
	if err != nil {
		return appOverview{}, err
	}
	o := appOverview{AppDetail: det}
	if o.Releases, err = s.store.releases(ctx, a.ID, 20); err == nil {
		if o.Events, err = s.store.events(ctx, a.ID, 30); err == nil {
			if o.Domains, err = s.store.domains(ctx, a); err == nil {
				if o.Builds, err = s.store.builds(ctx, a, 10); err == nil {
					o.Tasks, err = s.store.tasks(ctx, a, "", 10)
				}
			}
		}
	}
	if err != nil {
		return appOverview{}, err
	}
	if es, _, err := s.recentStream(ctx, s.keys.Logs(a.Name), 100, logFilter{Since: s.appSince(ctx, a.ID)}); err == nil {
		for _, e := range es {
			o.Logs = append(o.Logs, formatLogLine(e))
		}
	}
	return o, nil
}

// validateLimits checks the limits that are set.
func validateLimits(instances, memoryMB, cpuShares *int) error {
	if instances != nil && (*instances < 0 || *instances > MaxInstances) {
		return invalid("invalid_instances", "instances must be between 0 and "+strconv.Itoa(MaxInstances))
	}
	if memoryMB != nil && (*memoryMB < MinMemoryMB || *memoryMB > MaxMemoryMB) {
		return invalid("invalid_memory", "memory_mb must be between "+strconv.Itoa(MinMemoryMB)+" and "+strconv.Itoa(MaxMemoryMB))
	}
	if cpuShares != nil && (*cpuShares < MinCPUShares || *cpuShares > MaxCPUShares) {
		return invalid("invalid_cpu_shares", "cpu_shares must be between "+strconv.Itoa(MinCPUShares)+" and "+strconv.Itoa(MaxCPUShares))
	}
	return nil
}

// maxEnvValue bounds one env value.
const maxEnvValue = 32 << 10

var envNameRE = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]{0,127}$`)

// validateEnvName rejects names that are not portable env variables and the
// names the platform sets itself (PORT, DINP_*), which an app must not
// override.
func validateEnvName(k string) error {
	if !envNameRE.MatchString(k) {
		return invalid("invalid_env", "invalid env name "+strconv.Quote(k))
	}
	if k == "PORT" || strings.HasPrefix(strings.ToUpper(k), "DINP_") {
		return invalid("invalid_env", "env name "+k+" is reserved by the platform")
	}
	return nil
}

func validateEnv(set map[string]string, unset []string) error {
	for k, v := range set {
		if err := validateEnvName(k); err != nil {
			return err
		}
		if len(v) > maxEnvValue || strings.ContainsRune(v, 0) {
			return invalid("invalid_env", "value of "+k+" is too long or contains NUL")
		}
	}
	for _, k := range unset {
		if err := validateEnvName(k); err != nil {
			return err
		}
	}
	return nil
}

func validHealthPath(p string) bool {
	return p == "" || (strings.HasPrefix(p, "/") && len(p) <= 512 && !strings.ContainsAny(p, " \t\r\n"))
}

// summarize is an app's line in the app list (API and dashboard).
func summarize(v App, a appRow) AppSummary {
	sum := AppSummary{App: v, Running: a.Running, Placed: a.Placed, Crashed: a.Crashed,
		Stack: a.Stack, StackVersion: a.StackVersion, StackLatest: a.StackLatest}
	// Versions are UTC build times (20060102.150405): they sort as text.
	sum.StackOutdated = a.StackVersion != "" && a.StackLatest > a.StackVersion
	sum.State = appState(sum)
	return sum
}
