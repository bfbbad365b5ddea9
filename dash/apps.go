package dash

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/gin-gonic/gin"

	"github.com/dinp/dinp/common"
	"github.com/dinp/dinp/common/redisx"
	"github.com/dinp/dinp/dash/api"
)

// Limits of an app's desired state.
const (
	MaxInstances  = 100
	MinMemoryMB   = 16
	MaxMemoryMB   = 65536
	MinCPUShares  = 2
	MaxCPUShares  = 262144
	defaultMemory = 128
	defaultCPU    = 256
	maxJSONBody   = 1 << 20
	maxEnvValue   = 32 << 10
	listLimit     = 100
)

type App = api.App

type AppSummary = api.AppSummary

type Instance = api.Instance

type AppDetail = api.AppDetail

type CreateAppRequest = api.CreateAppRequest

type ScaleRequest = api.ScaleRequest

type EnvRequest = api.EnvRequest

type RollbackRequest = api.RollbackRequest

func (d *Dash) appView(a appRow) App {
	return App{
		Name: a.Name, Team: a.Team, Instances: a.Instances, MemoryMB: a.MemoryMB, CPUShares: a.CPUShares,
		Health: a.Health, Env: a.Env, CurrentRelease: a.CurrentRelease,
		URL:       "http://" + common.AppHost(a.Name, d.cfg.Base.Domain),
		AllowRoot: a.AllowRoot,
	}
}

// decodeJSON reads a JSON request body into v. An empty body leaves v as
// is; unknown fields are rejected so typos do not pass silently.
func decodeJSON(c *gin.Context, v any) error {
	dec := json.NewDecoder(http.MaxBytesReader(c.Writer, c.Request.Body, maxJSONBody))
	dec.DisallowUnknownFields()
	err := dec.Decode(v)
	var tooBig *http.MaxBytesError
	switch {
	case err == nil, errors.Is(err, io.EOF):
		return nil
	case errors.As(err, &tooBig):
		return common.Errf(http.StatusRequestEntityTooLarge, "too_large", "request body too large")
	default:
		return common.Errf(http.StatusBadRequest, "bad_request", "invalid JSON body: "+err.Error())
	}
}

func invalid(code, message string) error {
	return common.Errf(http.StatusUnprocessableEntity, code, message)
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

func (d *Dash) whoami(c *gin.Context) {
	c.JSON(http.StatusOK, gin.H{"user": currentUser(c)})
}

func (d *Dash) createApp(c *gin.Context) {
	var req CreateAppRequest
	if err := decodeJSON(c, &req); err != nil {
		d.fail(c, err)
		return
	}
	a, err := d.newApp(c.Request.Context(), currentUser(c), req)
	if err != nil {
		d.fail(c, err)
		return
	}
	c.JSON(http.StatusCreated, gin.H{"app": d.appView(a)})
}

// newApp validates and creates an app (API and web form).
func (d *Dash) newApp(ctx context.Context, u User, req CreateAppRequest) (appRow, error) {
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
	teamID, team, err := d.store.teamForUser(ctx, u, req.Team)
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
	if err := d.store.createApp(ctx, a, u.Name); err != nil {
		return appRow{}, err
	}
	d.dropLogs(ctx, a.Name) // lines a deleted app of this name may have left
	d.log.Info("app created", "app", a.Name, "team", team, "user", u.Name)
	return a, nil
}

func (d *Dash) listApps(c *gin.Context) {
	rows, err := d.store.apps(c.Request.Context(), currentUser(c))
	if err != nil {
		d.fail(c, err)
		return
	}
	out := make([]AppSummary, 0, len(rows))
	for _, a := range rows {
		out = append(out, summarize(d.appView(a), a))
	}
	c.JSON(http.StatusOK, gin.H{"apps": out})
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

const appKey = "dash.app"

// loadApp resolves :app for the current user; apps of other teams answer
// 404 exactly like apps that do not exist.
func (d *Dash) loadApp(c *gin.Context) {
	a, err := d.store.app(c.Request.Context(), currentUser(c), c.Param("app"))
	if err != nil {
		d.fail(c, err)
		return
	}
	c.Set(appKey, a)
	c.Next()
}

func appOf(c *gin.Context) appRow { return c.MustGet(appKey).(appRow) }

func (d *Dash) showApp(c *gin.Context) {
	out, err := d.appDetail(c.Request.Context(), appOf(c))
	if err != nil {
		d.fail(c, err)
		return
	}
	c.JSON(http.StatusOK, out)
}

// appDetail is an app with its current release and instances.
func (d *Dash) appDetail(ctx context.Context, a appRow) (AppDetail, error) {
	out := AppDetail{App: d.appView(a), Instances: []Instance{}}
	if a.CurrentRelease != nil {
		r, err := d.store.release(ctx, a.ID, *a.CurrentRelease)
		if err != nil && !errors.Is(err, errNotFound) {
			return AppDetail{}, err
		}
		if err == nil {
			out.Release = &r
		}
	}
	rows, err := d.store.instances(ctx, a.ID)
	if err != nil {
		return AppDetail{}, err
	}
	health := d.health(ctx, rows)
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
func (d *Dash) health(ctx context.Context, rows []instanceRow) []string {
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
	known, err := redisx.ReadHealth(hctx, d.rdb, d.keys, ids)
	if err != nil {
		d.log.Debug("read health", "err", err)
		return out
	}
	for i, id := range ids {
		if hs, ok := known[id]; ok && hs.Status != "" {
			out[i] = hs.Status
		}
	}
	return out
}

func (d *Dash) scale(c *gin.Context) {
	var req ScaleRequest
	if err := decodeJSON(c, &req); err != nil {
		d.fail(c, err)
		return
	}
	if req.Instances == nil && req.MemoryMB == nil && req.CPUShares == nil {
		d.fail(c, invalid("nothing_to_change", "give instances, memory_mb or cpu_shares"))
		return
	}
	if err := validateLimits(req.Instances, req.MemoryMB, req.CPUShares); err != nil {
		d.fail(c, err)
		return
	}
	d.change(c, appChange{Instances: req.Instances, MemoryMB: req.MemoryMB, CPUShares: req.CPUShares}, "scale")
}

func (d *Dash) getEnv(c *gin.Context) {
	c.JSON(http.StatusOK, gin.H{"env": appOf(c).Env})
}

func (d *Dash) putEnv(c *gin.Context) {
	var req EnvRequest
	if err := decodeJSON(c, &req); err != nil {
		d.fail(c, err)
		return
	}
	if err := validateEnv(req.Set, req.Unset); err != nil {
		d.fail(c, err)
		return
	}
	for _, k := range req.Unset {
		if _, ok := req.Set[k]; ok {
			d.fail(c, invalid("invalid_env", k+" is both set and unset"))
			return
		}
	}
	d.change(c, appChange{Set: req.Set, Unset: req.Unset}, "env")
}

// change applies a desired-state change, answers the app (and the new
// release when one was made) and tells the leader.
func (d *Dash) change(c *gin.Context, ch appChange, kind string) {
	updated, rel, err := d.applyChange(c.Request.Context(), appOf(c), currentUser(c), ch, kind)
	if err != nil {
		d.fail(c, err)
		return
	}
	c.JSON(http.StatusOK, gin.H{"app": d.appView(updated), "env": updated.Env, "release": rel})
}

// applyChange stores a validated change and tells the leader.
func (d *Dash) applyChange(ctx context.Context, a appRow, u User, ch appChange, kind string) (appRow, *Release, error) {
	updated, rel, err := d.store.updateApp(ctx, a.ID, ch, u.Name, kind)
	if err != nil {
		return appRow{}, nil, err
	}
	d.publishDesired(ctx, a.Name)
	d.log.Info("app changed", "app", a.Name, "kind", kind, "user", u.Name)
	return updated, rel, nil
}

func (d *Dash) listReleases(c *gin.Context) {
	rels, err := d.store.releases(c.Request.Context(), appOf(c).ID, listLimit)
	if err != nil {
		d.fail(c, err)
		return
	}
	c.JSON(http.StatusOK, gin.H{"releases": rels})
}

func (d *Dash) rollback(c *gin.Context) {
	var req RollbackRequest
	if err := decodeJSON(c, &req); err != nil {
		d.fail(c, err)
		return
	}
	if req.Version < 0 {
		d.fail(c, invalid("invalid_version", "version must be positive"))
		return
	}
	rel, err := d.doRollback(c.Request.Context(), appOf(c), currentUser(c), req.Version)
	if err != nil {
		d.fail(c, err)
		return
	}
	c.JSON(http.StatusCreated, gin.H{"release": rel})
}

// doRollback makes a new release from an old one (0: the one before the
// current) and tells the leader.
func (d *Dash) doRollback(ctx context.Context, a appRow, u User, version int) (Release, error) {
	rel, err := d.store.rollback(ctx, a.ID, version, u.Name)
	if err != nil {
		return Release{}, err
	}
	d.publishDesired(ctx, a.Name)
	d.log.Info("rolled back", "app", a.Name, "release", rel.Version, "user", u.Name)
	return rel, nil
}

func (d *Dash) deleteApp(c *gin.Context) {
	a := appOf(c)
	if err := d.removeApp(c.Request.Context(), a, currentUser(c)); err != nil {
		d.fail(c, err)
		return
	}
	c.JSON(http.StatusOK, gin.H{"deleted": a.Name})
}

// removeApp deletes an app; the leader then stops its instances and removes
// its routes.
func (d *Dash) removeApp(ctx context.Context, a appRow, u User) error {
	if err := d.store.deleteApp(ctx, a.ID); err != nil {
		return err
	}
	d.dropLogs(ctx, a.Name)
	d.publishDesired(ctx, a.Name)
	d.log.Info("app deleted", "app", a.Name, "user", u.Name)
	return nil
}

func (d *Dash) listEvents(c *gin.Context) {
	evs, err := d.store.events(c.Request.Context(), appOf(c).ID, listLimit)
	if err != nil {
		d.fail(c, err)
		return
	}
	c.JSON(http.StatusOK, gin.H{"events": evs})
}

func joinSorted(s []string) string {
	s = append([]string(nil), s...)
	sort.Strings(s)
	return strings.Join(s, ",")
}

func joinList(s []string) string { return strings.Join(s, ", ") }

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n]
}
