package dash

import (
	"context"
	"errors"
	"net/http"
	"time"

	"github.com/gin-gonic/gin"
	"github.com/redis/go-redis/v9"

	"github.com/dinp/dinp/common"
	"github.com/dinp/dinp/common/redisx"
	"github.com/dinp/dinp/dash/api"
)

// getCluster answers the platform's components: the leader, servers,
// routers with their route version and lag, hm members with their share,
// registries with their disk use.
func (d *Dash) getCluster(c *gin.Context) {
	cl, err := d.cluster(c.Request.Context())
	if err != nil {
		d.fail(c, err)
		return
	}
	c.JSON(http.StatusOK, cl)
}

// cluster reads what each component last reported of itself (see
// redisx.ReportStatus) with the leader and Redis's route version.
func (d *Dash) cluster(ctx context.Context) (api.Cluster, error) {
	cl := api.Cluster{}
	now := time.Now().UTC()
	members := map[string][]api.Member{}
	for _, role := range common.StatusRoles {
		sts, err := redisx.ReadStatus(ctx, d.rdb, d.keys, role, now)
		if err != nil {
			return cl, err
		}
		ms := make([]api.Member, len(sts))
		for i, st := range sts {
			ms[i] = api.Member{ID: st.ID, Version: st.Version, Addr: st.Addr, At: st.At, Leader: st.Leader,
				RoutesVersion: st.RoutesVersion, Routes: st.Routes, Probing: st.Probing, DiskBytes: st.DiskBytes}
		}
		members[role] = ms
	}
	cl.Servers, cl.Routers, cl.HM, cl.Registries = members[common.RoleServer], members[common.RoleRouter],
		members[common.RoleHM], members[common.RoleRegistry]
	cl.ServerVersion = newestVersion(cl.Servers)

	pipe := d.rdb.Pipeline()
	leader := pipe.Get(ctx, d.keys.Leader())
	version := pipe.Get(ctx, d.keys.RoutesVersion())
	if _, err := pipe.Exec(ctx); err != nil && !errors.Is(err, redis.Nil) {
		return cl, err
	}
	cl.Leader = leader.Val()
	cl.RoutesVersion, _ = version.Int64()

	for _, ms := range [][]api.Member{cl.Servers, cl.Routers, cl.HM, cl.Registries} {
		for i := range ms {
			ms[i].Outdated = common.Outdated(ms[i].Version, cl.ServerVersion)
		}
	}
	for i := range cl.Routers {
		if v := cl.Routers[i].RoutesVersion; v != nil {
			lag := max(cl.RoutesVersion-*v, 0)
			cl.Routers[i].Lag = &lag
		}
	}
	total := 0
	for _, m := range cl.HM {
		if m.Probing != nil {
			total += *m.Probing
		}
	}
	for i := range cl.HM {
		if p := cl.HM[i].Probing; p != nil && total > 0 {
			share := float64(*p) / float64(total)
			cl.HM[i].Share = &share
		}
	}
	return cl, nil
}

// newestVersion is the newest version among members (the first one
// reported when none can be ordered, "" when none is).
func newestVersion(ms []api.Member) string {
	newest := ""
	for _, m := range ms {
		if _, ok := common.CompareVersions(m.Version, m.Version); !ok {
			if newest == "" {
				newest = m.Version
			}
			continue
		}
		if c, ok := common.CompareVersions(m.Version, newest); !ok || c > 0 {
			newest = m.Version
		}
	}
	return newest
}

// serverVersion is the newest version of the live servers ("" when none
// reports).
func (d *Dash) serverVersion(ctx context.Context) (string, error) {
	sts, err := redisx.ReadStatus(ctx, d.rdb, d.keys, common.RoleServer, time.Now().UTC())
	if err != nil {
		return "", err
	}
	ms := make([]api.Member, len(sts))
	for i, st := range sts {
		ms[i].Version = st.Version
	}
	return newestVersion(ms), nil
}
