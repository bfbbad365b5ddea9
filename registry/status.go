package registry

import (
	"context"
	"io/fs"
	"path/filepath"
	"time"

	"github.com/dinp/dinp/common"
	"github.com/dinp/dinp/common/redisx"
)

// diskEvery is how often the storage is walked for its size: a walk reads
// every blob's metadata, so it is rare and never on a request path.
const diskEvery = 30 * time.Second

// reportStatus writes the registry's status (with the disk its storage
// takes) to Redis until ctx is done; without Redis configured it does
// nothing (the registry itself never needs Redis).
func (r *Registry) reportStatus(ctx context.Context) {
	if r.cfg.RedisAddr == "" && r.cfg.RedisSentinels == "" {
		return
	}
	rdb := redisx.NewClient(r.cfg.Base, redisx.Options(r.cfg.Base))
	defer rdb.Close()
	var size int64
	var walked time.Time
	redisx.ReportStatus(ctx, rdb, r.cfg.Keys(), common.RoleRegistry, redisx.MemberID(r.Addr()), common.StatusPeriod, r.log,
		func(st *common.ComponentStatus) {
			if time.Since(walked) >= diskEvery {
				size, walked = diskUse(r.cfg.StorageDir), time.Now()
			}
			st.Addr, st.DiskBytes = r.Addr(), &size
		})
}

// diskUse is the size of the files under dir (what can be read of it).
func diskUse(dir string) int64 {
	var n int64
	filepath.WalkDir(dir, func(_ string, d fs.DirEntry, err error) error {
		if err == nil && d.Type().IsRegular() {
			if info, err := d.Info(); err == nil {
				n += info.Size()
			}
		}
		return nil
	})
	return n
}
