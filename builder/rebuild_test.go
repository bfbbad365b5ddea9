package builder

import (
	"archive/tar"
	"bytes"
	"context"
	"encoding/json"
	"net/http"
	"os"
	"path/filepath"
	"testing"

	"github.com/dinp/dinp/common"
	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/remote"
)

// fakeRootfs writes a stack version into cache without mmdebstrap: a
// layer with /bin/sh (busybox) and a marker file.
func fakeRootfs(t *testing.T, cache, stack, version, marker string) {
	t.Helper()
	busybox, err := os.ReadFile(hostBusybox)
	if err != nil {
		t.Skipf("no static busybox: %v", err)
	}
	dir := filepath.Join(cache, stack, version)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	tw.WriteHeader(&tar.Header{Typeflag: tar.TypeDir, Name: "./bin/", Mode: 0o755})
	tw.WriteHeader(&tar.Header{Typeflag: tar.TypeReg, Name: "./bin/sh", Mode: 0o755, Size: int64(len(busybox))})
	tw.Write(busybox)
	tw.WriteHeader(&tar.Header{Typeflag: tar.TypeReg, Name: "./etc-marker", Mode: 0o644, Size: int64(len(marker))})
	tw.Write([]byte(marker))
	tw.Close()
	raw := filepath.Join(t.TempDir(), "rootfs.tar")
	if err := os.WriteFile(raw, buf.Bytes(), 0o644); err != nil {
		t.Fatal(err)
	}
	l, err := compressRootfs(raw, filepath.Join(dir, "layer.tar.gz"), filepath.Join(dir, "files.txt"))
	if err != nil {
		t.Fatal(err)
	}
	mj, _ := json.Marshal(rootfsMeta{Name: stack, Version: version, Digest: l.digest.String(), DiffID: l.diffID.String(), Size: l.size})
	if err := os.WriteFile(filepath.Join(dir, "meta.json"), mj, 0o644); err != nil {
		t.Fatal(err)
	}
}

// TestRebuildMovesToNewestStack builds a script app on the debian stack,
// makes a newer stack version, and rebuilds: the new image has the new
// base layer and the very same app layer, and no upload was needed.
func TestRebuildMovesToNewestStack(t *testing.T) {
	cache := t.TempDir()
	fakeRootfs(t, cache, StackDebian, "20000101.000000", "v1")
	e := startEnv(t, func(c *Config) { c.StackCache = cache })

	code, first, eb := e.post(t, "hello", tarGz(t, file("run.sh", "#!/bin/sh\necho hi\n", 0o755)), testToken)
	if code != http.StatusCreated || first.Stack != StackDebian {
		t.Fatalf("build = %d %+v %+v", code, first, eb)
	}
	fakeRootfs(t, cache, StackDebian, "20000102.000000", "v2")
	// The same upload again lands on the newest stack: the first build's
	// image (older base) is not reused.
	code, again, eb := e.post(t, "hello", tarGz(t, file("run.sh", "#!/bin/sh\necho hi\n", 0o755)), testToken)
	if code != http.StatusCreated || again.Reused || again.StackVersion != "20000102.000000" {
		t.Errorf("redeploy after the stack upgrade = %d %+v %+v", code, again, eb)
	}

	second, err := e.b.Rebuild(context.Background(), "hello", "bob", first.ID)
	if err != nil {
		t.Fatal(err)
	}
	if second.ID == first.ID || second.Stack != StackDebian || second.Image == first.Image {
		t.Fatalf("rebuild = %+v, first %+v", second, first)
	}
	pull := func(image string) ([]string, map[string]string) {
		r, err := name.NewDigest(image, name.Insecure)
		if err != nil {
			t.Fatal(err)
		}
		img, err := remote.Image(r, remote.WithAuth(testAuth))
		if err != nil {
			t.Fatal(err)
		}
		ls, _ := img.Layers()
		var ds []string
		for _, l := range ls {
			d, _ := l.Digest()
			ds = append(ds, d.String())
		}
		cf, _ := img.ConfigFile()
		return ds, cf.Config.Labels
	}
	l1, lab1 := pull(first.Image)
	l2, lab2 := pull(second.Image)
	newest, _, _ := latestRootfs(cache, StackDebian)
	if len(l1) != 2 || len(l2) != 2 || l1[1] != l2[1] || l1[0] == l2[0] || l2[0] != newest.meta.Digest {
		t.Errorf("layers before %v after %v; newest base %s", l1, l2, newest.meta.Digest)
	}
	if lab1["dinp.stack.version"] != "20000101.000000" || lab2["dinp.stack.version"] != "20000102.000000" {
		t.Errorf("stack versions %v → %v", lab1, lab2)
	}
	var status common.BuildStatus
	e.db.QueryRow("SELECT status FROM builds WHERE id = ?", second.ID).Scan(&status)
	if status != StatusSucceeded {
		t.Errorf("rebuild recorded as %q", status)
	}
	// Each build records the stack version it runs on, and the builder
	// the versions it used (dash marks apps on an older one).
	if first.StackVersion != "20000101.000000" || second.StackVersion != "20000102.000000" {
		t.Errorf("stack versions recorded %q → %q", first.StackVersion, second.StackVersion)
	}
	if got, _ := e.b.Get(context.Background(), first.ID); got.StackVersion != "20000101.000000" {
		t.Errorf("GET build: stack_version %q", got.StackVersion)
	}
	var versions int
	e.db.QueryRow("SELECT COUNT(*) FROM stack_versions WHERE stack = ? AND version IN ('20000101.000000', '20000102.000000')", StackDebian).Scan(&versions)
	if versions != 2 {
		t.Errorf("stack_versions has %d of the 2 versions used", versions)
	}
	// A build that is not the app's is not found.
	if _, err := e.b.Rebuild(context.Background(), "other", "bob", first.ID); err == nil {
		t.Error("rebuild of another app's build succeeded")
	}
}
