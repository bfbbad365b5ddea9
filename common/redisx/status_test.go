package redisx_test

import (
	"context"
	"log/slog"
	"testing"
	"time"

	"github.com/dinp/dinp/common"
	"github.com/dinp/dinp/common/redisx"
	"github.com/dinp/dinp/common/testenv"
)

// TestReportStatus: a component's status is in its role's hash while it
// runs (with what it fills in), readable by ReadStatus, and gone when it
// stops.
func TestReportStatus(t *testing.T) {
	rdb, prefix := testenv.Redis(t)
	keys := common.NewKeys(prefix)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		redisx.ReportStatus(ctx, rdb, keys, common.RoleRouter, "rtr-1", 20*time.Millisecond, slog.Default(), func(st *common.ComponentStatus) {
			v := int64(7)
			st.RoutesVersion = &v
		})
	}()
	deadline := time.Now().Add(5 * time.Second)
	var got []common.ComponentStatus
	for len(got) == 0 && time.Now().Before(deadline) {
		var err error
		if got, err = redisx.ReadStatus(context.Background(), rdb, keys, common.RoleRouter, time.Now()); err != nil {
			t.Fatal(err)
		}
		time.Sleep(10 * time.Millisecond)
	}
	if len(got) != 1 || got[0].ID != "rtr-1" || got[0].Version != common.Version || *got[0].RoutesVersion != 7 {
		t.Fatalf("status %+v", got)
	}
	if ttl := rdb.PTTL(context.Background(), keys.Status(common.RoleRouter)).Val(); ttl <= 0 {
		t.Fatalf("status hash without a TTL: %v", ttl)
	}
	cancel()
	<-done
	if n := rdb.HLen(context.Background(), keys.Status(common.RoleRouter)).Val(); n != 0 {
		t.Fatalf("%d status left after stopping", n)
	}
}
