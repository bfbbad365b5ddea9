package dash

import (
	"strings"
	"testing"
)

func TestDeployImageReference(t *testing.T) {
	e := newEnv(t, nil)
	img := "127.0.0.1:5000/web@sha256:" + strings.Repeat("a", 64)
	e.createApp("web")
	var out struct{ Release Release }
	if st, code := e.call("POST", "/api/v1/apps/web/deploy", e.admin.Token, DeployImageRequest{Image: img}, &out); st != 201 || out.Release.Version != 1 || out.Release.Image != img {
		t.Fatalf("admin deploys an image: %d %s %+v", st, code, out)
	}
	if e.builder.callCount() != 0 {
		t.Fatal("an image deploy called the builder")
	}
	for _, bad := range []string{"web:latest", "127.0.0.1:5000/web@sha256:abc", ""} {
		if st, code := e.call("POST", "/api/v1/apps/web/deploy", e.admin.Token, DeployImageRequest{Image: bad}, nil); st != 422 || code != "invalid_image" {
			t.Errorf("image %q: %d %s", bad, st, code)
		}
	}
	bob := e.addUser("bob", "bobs")
	if st, _ := e.call("POST", "/api/v1/apps", bob, CreateAppRequest{Name: "bobapp"}, nil); st != 201 {
		t.Fatal("bob create")
	}
	// Another app's image is refused to a non-admin...
	if st, code := e.call("POST", "/api/v1/apps/bobapp/deploy", bob, DeployImageRequest{Image: img}, nil); st != 422 || code != "unknown_image" {
		t.Fatalf("bob deploys web's image: %d %s", st, code)
	}
	// ...its own build's image is fine.
	if st, _ := e.deploy(bob, "bobapp", []byte("bob's tarball"), &out); st != 201 {
		t.Fatalf("bob deploy: %d", st)
	}
	own := out.Release.Image
	if st, code := e.call("POST", "/api/v1/apps/bobapp/deploy", bob, DeployImageRequest{Image: own}, &out); st != 201 || out.Release.Version != 2 {
		t.Fatalf("bob redeploys his image: %d %s %+v", st, code, out)
	}
}
