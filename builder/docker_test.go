package builder

import (
	"archive/tar"
	"context"
	"net/http"
	"reflect"
	"testing"
	"time"

	"github.com/docker/docker/api/types/filters"
	"github.com/docker/docker/api/types/image"
	"github.com/docker/docker/client"
	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/remote"

	"github.com/dinp/dinp/common/testenv"
)

// TestDockerfileBuild builds FROM scratch with the real engine and pushes to
// the in-process registry (the engine treats 127.0.0.0/8 registries as
// plain-HTTP).
func TestDockerfileBuild(t *testing.T) {
	cli, err := client.NewClientWithOpts(client.FromEnv, client.WithAPIVersionNegotiation())
	if err == nil {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		_, err = cli.Ping(ctx)
		cancel()
	}
	if err != nil {
		testenv.Unavailable(t, "Docker", err)
	}
	defer cli.Close()

	e := startEnv(t, nil)
	bin := testServer(t)
	archive := tarGz(t,
		file("Dockerfile", "# a static binary on nothing\nFROM scratch\nCOPY server /server\nUSER 65534:65534\nENTRYPOINT [\"/server\"]\n", 0o644),
		entry{name: "server", typ: tar.TypeReg, body: string(bin), mode: 0o755},
	)
	code, res, eb := e.post(t, "hello", archive, testToken)
	if code != http.StatusCreated {
		t.Fatalf("build: %d %+v", code, eb)
	}
	if res.Stack != StackDockerfile || res.Status != StatusSucceeded || res.Image != e.regAddr+"/hello@"+res.Digest || res.SizeBytes <= 0 {
		t.Fatalf("result = %+v", res)
	}
	e.buildsDirEmpty(t)

	ref, err := name.NewDigest(res.Image, name.Insecure)
	if err != nil {
		t.Fatal(err)
	}
	img, err := remote.Image(ref, remote.WithAuth(&authn.Basic{Username: "dinp", Password: testToken}))
	if err != nil {
		t.Fatalf("pull: %v", err)
	}
	cf, err := img.ConfigFile()
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(cf.Config.Entrypoint, []string{"/server"}) || cf.Config.User != "65534:65534" {
		t.Errorf("config = entrypoint %q user %q", cf.Config.Entrypoint, cf.Config.User)
	}

	// The engine keeps no local copy: the registry is where images live.
	local, err := cli.ImageList(context.Background(), image.ListOptions{Filters: filters.NewArgs(filters.Arg("reference", e.regAddr+"/hello"))})
	if err != nil || len(local) != 0 {
		t.Errorf("local images of hello still present: %v (err %v)", local, err)
	}
}
