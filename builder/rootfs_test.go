package builder

import (
	"context"
	"os"
	"strings"
	"testing"
	"time"
)

// TestRootfsBuild builds (or finds in the machine's stack cache) the stack
// named by DINP_TEST_ROOTFS and checks its layer and file list.
func TestRootfsBuild(t *testing.T) {
	names := os.Getenv("DINP_TEST_ROOTFS")
	if names == "" {
		t.Skip("DINP_TEST_ROOTFS not set")
	}
	for _, name := range strings.Split(names, ",") {
		t.Run(name, func(t *testing.T) { testRootfs(t, name) })
	}
}

func testRootfs(t *testing.T, name string) {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Minute)
	defer cancel()
	r, err := ensureRootfs(ctx, DefaultStackCache(), name, func(l string) { t.Log(l) })
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("%s %s %d bytes %d files %.1fs", r.meta.Name, r.meta.Version, r.meta.Size, len(r.files), r.meta.BuildSeconds)
	if _, ok := r.resolve("/bin/sh"); !ok {
		t.Errorf("no /bin/sh")
	}
	for p := range r.files {
		if strings.HasPrefix(p, "/usr/share/man/") {
			t.Errorf("not trimmed: %s", p)
			break
		}
	}
}
