package registry

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/random"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/remote/transport"

	"github.com/dinp/dinp/common/testenv"
)

func TestGC(t *testing.T) {
	dsn, pool := testenv.MySQL(t)
	r := start(t, func(c *Config) {
		c.MySQLDSN = dsn
		c.GCInterval = 0 // collections are started by the test
		c.GCKeepReleases = 3
		c.GCQuiet = 0
	})
	auth := remote.WithAuth(&authn.Basic{Username: "dinp", Password: testToken})
	push := func(repo, tag string) (string, v1.Image) {
		t.Helper()
		img, err := random.Image(1024, 2)
		if err != nil {
			t.Fatal(err)
		}
		ref, _ := name.NewTag(r.Addr()+"/"+repo+":"+tag, name.Insecure)
		if err := remote.Write(ref, img, auth); err != nil {
			t.Fatalf("push %s: %v", ref, err)
		}
		d, _ := img.Digest()
		return r.Addr() + "/" + repo + "@" + d.String(), img
	}
	exec := func(q string, args ...any) {
		t.Helper()
		if _, err := pool.Exec(q, args...); err != nil {
			t.Fatalf("%s: %v", q, err)
		}
	}
	exec("INSERT INTO teams (name) VALUES ('t')")
	exec(`INSERT INTO apps (name, team_id, health_json, env_json, constraints_json)
		VALUES ('hello', (SELECT id FROM teams), '{}', '{}', '{}')`)

	// Releases 1..5; keep the last 3, and 1 because an instance runs it.
	images := map[string]string{}
	layers := map[string]v1.Image{}
	for v := 1; v <= 5; v++ {
		img, l := push("hello", fmt.Sprintf("build-%d", v))
		images[fmt.Sprint(v)], layers[fmt.Sprint(v)] = img, l
		exec(`INSERT INTO releases (app_id, version, image, env_json, memory_mb, cpu_shares)
			VALUES ((SELECT id FROM apps), ?, ?, '{}', 64, 256)`, v, img)
	}
	exec(`UPDATE apps SET current_release = 5`)
	exec(`INSERT INTO instances (id, app_id, release_version, idx, node, state)
		VALUES ('i1', (SELECT id FROM apps), 1, 0, 'n1', 'running')`)
	// A build that just finished (its release may be on its way), an old
	// build nobody released, a stack base image and an unknown app's image.
	images["recent"], _ = push("hello", "build-6")
	exec(`INSERT INTO builds (app_id, status, image, finished_at) VALUES ((SELECT id FROM apps), 'succeeded', ?, ?)`,
		images["recent"], time.Now().UTC())
	images["old build"], layers["old build"] = push("hello", "build-7")
	exec(`INSERT INTO builds (app_id, status, image, finished_at) VALUES ((SELECT id FROM apps), 'succeeded', ?, ?)`,
		images["old build"], time.Now().Add(-48*time.Hour).UTC())
	images["stack"], _ = push("dinp/stacks/binary", "latest")
	images["ghost"], _ = push("ghost", "x")

	st, err := r.GC(context.Background())
	if err != nil {
		t.Fatalf("GC: %v", err)
	}
	if st.ManifestsDeleted != 2 || st.ManifestsKept != 5 {
		t.Errorf("GC stats = %+v, want 2 deleted and 5 kept", st)
	}

	pull := func(image string) error {
		ref, _ := name.NewDigest(image, name.Insecure)
		img, err := remote.Image(ref, auth)
		if err != nil {
			return err
		}
		ls, err := img.Layers()
		if err != nil {
			return err
		}
		for _, l := range ls {
			rc, err := l.Compressed()
			if err != nil {
				return err
			}
			_, err = io.Copy(io.Discard, rc)
			rc.Close()
			if err != nil {
				return err
			}
		}
		return nil
	}
	for _, k := range []string{"1", "3", "4", "5", "recent", "stack", "ghost"} {
		if err := pull(images[k]); err != nil {
			t.Errorf("kept image %s (%s) not pullable: %v", k, images[k], err)
		}
	}
	for _, k := range []string{"2", "old build"} {
		ref, _ := name.NewDigest(images[k], name.Insecure)
		_, err := remote.Head(ref, auth)
		if !isNotFound(err) {
			t.Errorf("deleted image %s: HEAD = %v, want 404", k, err)
		}
		// Its layers are swept from the disk too.
		if code := blobStatus(t, r, layers[k]); code != http.StatusNotFound {
			t.Errorf("layer of deleted image %s: HEAD = %d, want 404", k, code)
		}
		if _, err := os.Stat(blobFile(t, r, layers[k])); !os.IsNotExist(err) {
			t.Errorf("layer file of deleted image %s: %v, want it gone", k, err)
		}
	}
	if code := blobStatus(t, r, layers["1"]); code != http.StatusOK {
		t.Errorf("layer of kept image: HEAD = %d, want 200", code)
	}
	if _, err := os.Stat(blobFile(t, r, layers["1"])); err != nil {
		t.Errorf("layer file of kept image: %v", err)
	}
	tag, _ := name.NewTag(r.Addr()+"/hello:build-2", name.Insecure)
	if _, err := remote.Head(tag, auth); !isNotFound(err) {
		t.Errorf("tag of deleted image: HEAD = %v, want 404", err)
	}

	// A second collection finds nothing more to do.
	st, err = r.GC(context.Background())
	if err != nil || st.ManifestsDeleted != 0 {
		t.Errorf("second GC = %+v, %v", st, err)
	}

	// A deleted app's repository is emptied, except what another app's
	// release still names; its deleted_apps row goes with the last image.
	gone1, _ := push("gone", "build-1")
	gone2, _ := push("gone", "build-2")
	exec(`INSERT INTO deleted_apps (name) VALUES ('gone')`)
	exec(`INSERT INTO releases (app_id, version, image, env_json, memory_mb, cpu_shares)
		VALUES ((SELECT id FROM apps), 6, ?, '{}', 64, 256)`, gone2)
	exec(`UPDATE apps SET current_release = 6`)
	if _, err := r.GC(context.Background()); err != nil {
		t.Fatalf("GC: %v", err)
	}
	head := func(image string) error {
		ref, _ := name.NewDigest(image, name.Insecure)
		_, err := remote.Head(ref, auth)
		return err
	}
	if err := head(gone1); !isNotFound(err) {
		t.Errorf("unreferenced image of a deleted app: HEAD = %v, want 404", err)
	}
	if err := pull(gone2); err != nil {
		t.Errorf("image of a deleted app still released by another app: %v", err)
	}
	if err := pull(images["ghost"]); err != nil {
		t.Errorf("repository of no app (pushed by hand) touched: %v", err)
	}
	rows := func() int {
		var n int
		pool.QueryRow(`SELECT COUNT(*) FROM deleted_apps`).Scan(&n)
		return n
	}
	if rows() != 1 {
		t.Errorf("deleted_apps row dropped while the repository still holds an image")
	}
	exec(`DELETE FROM releases WHERE version = 6`)
	exec(`UPDATE apps SET current_release = 5`)
	if _, err := r.GC(context.Background()); err != nil {
		t.Fatalf("GC: %v", err)
	}
	if err := head(gone2); !isNotFound(err) {
		t.Errorf("last image of a deleted app: HEAD = %v, want 404", err)
	}
	if rows() != 0 {
		t.Errorf("deleted_apps row kept after its repository was emptied")
	}
}

// blobStatus is the answer to a HEAD of img's first layer in repo hello.
func blobStatus(t *testing.T, r *Registry, img v1.Image) int {
	t.Helper()
	ls, err := img.Layers()
	if err != nil {
		t.Fatal(err)
	}
	d, _ := ls[0].Digest()
	req, _ := http.NewRequest(http.MethodHead, "http://"+r.Addr()+"/v2/hello/blobs/"+d.String(), nil)
	req.Header.Set("Authorization", "Bearer "+fetchToken(t, r, "dinp", testToken, "repository:hello:pull"))
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	return resp.StatusCode
}

// blobFile is where the filesystem driver keeps img's first layer.
func blobFile(t *testing.T, r *Registry, img v1.Image) string {
	ls, _ := img.Layers()
	d, _ := ls[0].Digest()
	return filepath.Join(r.cfg.StorageDir, "docker/registry/v2/blobs/sha256", d.Hex[:2], d.Hex, "data")
}

func isNotFound(err error) bool {
	te, ok := err.(*transport.Error)
	return ok && te.StatusCode == http.StatusNotFound
}

func TestGCWithoutMySQLChangesNothing(t *testing.T) {
	r := start(t, func(c *Config) {
		c.MySQLDSN = "dinp:dinp@tcp(127.0.0.1:1)/nope"
		c.GCInterval = 0
		c.GCQuiet = 0
	})
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	if _, err := r.GC(ctx); err == nil {
		t.Fatal("GC without MySQL succeeded")
	}
}
