package dash

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/gin-gonic/gin"

	"github.com/dinp/dinp/common"
	"github.com/dinp/dinp/common/redisx"
	"github.com/dinp/dinp/dash/api"
)

const (
	ReleaseDeploying  = api.ReleaseDeploying
	ReleaseHealthy    = api.ReleaseHealthy
	ReleaseFailed     = api.ReleaseFailed
	ReleaseRolledBack = api.ReleaseRolledBack
	ReleaseSuperseded = api.ReleaseSuperseded
)

type ReleaseStatus = api.ReleaseStatus

func (d *Dash) getReleaseStatus(c *gin.Context) {
	v, err := strconv.Atoi(c.Param("version"))
	if err != nil || v <= 0 {
		d.fail(c, invalid("invalid_version", "version must be a positive integer"))
		return
	}
	st, err := d.releaseStatus(c.Request.Context(), appOf(c), v)
	if err != nil {
		d.fail(c, err)
		return
	}
	c.JSON(http.StatusOK, st)
}

// releaseStatus judges release version of app a from the instance rows,
// hm's verdicts, the leader's rollback events and the log stream, with
// the leader's own rule (common.CannotServe).
func (d *Dash) releaseStatus(ctx context.Context, a appRow, version int) (ReleaseStatus, error) {
	if _, err := d.store.release(ctx, a.ID, version); err != nil {
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
		t, err := d.store.releaseTask(ctx, a, version)
		switch {
		case err == nil && !common.TaskDone(t.State):
			st.ReleasePhase, st.Task = t.State, t.ID
			return st, nil
		case err == nil && t.State != common.TaskSucceeded:
			st.ReleasePhase, st.Task, st.Instance = t.State, t.ID, t.ID
			st.State = ReleaseFailed
			st.Reason = fmt.Sprintf("release v%d not rolled out: release phase %q %s", version, releaseCommandText(t), common.TaskOutcome(t.State, t.Reason, t.ExitCode))
			lctx, cancel := context.WithTimeout(ctx, time.Second)
			st.Lines, _ = redisx.StreamTail(lctx, d.rdb, d.keys.TaskLogs(t.ID), t.ID, common.EvidenceLines, 2000)
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
		evs, err := d.store.events(ctx, a.ID, listLimit)
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

	rows, err := d.store.instances(ctx, a.ID)
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
	health, err := redisx.ReadHealth(hctx, d.rdb, d.keys, ids)
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
		st.Lines, _ = redisx.InstanceTail(lctx, d.rdb, d.keys, a.Name, first, common.EvidenceLines, 2000)
		cancel()
	}
	return st, nil
}

// releaseCommandText is the release: line a release task runs.
func releaseCommandText(t Task) string {
	if len(t.Command) == 3 && t.Command[1] == "-c" {
		return t.Command[2]
	}
	return strings.Join(t.Command, " ")
}
