package builder

import (
	"context"
	"fmt"
	"slices"
	"strconv"
	"time"

	"github.com/dinp/dinp/common/regauth"
	"github.com/docker/docker/api/types/registry"
	"github.com/google/go-containerregistry/pkg/name"
)

// recordPulls wraps policy to collect the repositories of the images it
// allowed (the pinned references), which the build's grant may pull.
func recordPulls(policy imagePolicy) (imagePolicy, *[]string) {
	repos := &[]string{}
	return func(ctx context.Context, ref string) (string, error) {
		pinned, err := policy(ctx, ref)
		if err != nil {
			return "", err
		}
		if r, perr := name.ParseReference(pinned, name.Insecure); perr == nil {
			if repo := r.Context().RepositoryStr(); !slices.Contains(*repos, repo) {
				*repos = append(*repos, repo)
			}
		}
		return pinned, nil
	}, repos
}

// scopedAuth is the registry credential the engine builds and pushes app
// with: a grant, signed with the cluster token and valid for one build
// (BuildTimeout plus the push), that the registry's token endpoint turns
// into tokens for push+pull on the app's repository and pull on pulls only.
// A Dockerfile naming anything else gets nothing from the registry even if
// the check in pinDockerfile were bypassed.
func (b *Builder) scopedAuth(appID int64, app string, pulls *[]string) (registry.AuthConfig, error) {
	if b.cfg.RegistryPassword != b.cfg.ClusterToken {
		// An external registry with its own account: it issues no dinp
		// grants (the Dockerfile check still applies).
		return registry.AuthConfig{Username: b.cfg.RegistryUser, Password: b.cfg.RegistryPassword}, nil
	}
	access := []regauth.Access{{Repo: app, Actions: []string{"pull", "push"}}}
	for _, repo := range *pulls {
		if repo != app {
			access = append(access, regauth.Access{Repo: repo, Actions: []string{"pull"}})
		}
	}
	grant, err := regauth.Mint(b.cfg.ClusterToken, "build:"+app+":"+strconv.FormatInt(appID, 10),
		access, b.cfg.BuildTimeout+10*time.Minute, time.Now())
	if err != nil {
		return registry.AuthConfig{}, fmt.Errorf("registry grant: %w", err)
	}
	return registry.AuthConfig{Username: regauth.GrantUser, Password: grant}, nil
}
