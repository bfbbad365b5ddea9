package builder

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"regexp"
	"strconv"
	"strings"

	"github.com/google/go-containerregistry/pkg/name"

	"github.com/dinp/dinp/common"
)

// StacksRepoPrefix is the registry path under which the platform's stack
// base images live; every app's Dockerfile may build on them.
const StacksRepoPrefix = "dinp/stacks/"

// imagePolicy says which images a Dockerfile may name and pins them: it
// returns the reference by digest the engine is given instead, or an error
// (a *common.APIError for what the tenant wrote).
type imagePolicy func(ctx context.Context, ref string) (string, error)

// pinDockerfile checks every place a Dockerfile can name an image — FROM,
// COPY/ADD --from, RUN --mount=from=, and the same inside ONBUILD — and
// returns the Dockerfile the engine builds: one instruction per line, no
// comments or parser directives, every image replaced by its pinned digest.
// Stage names and indexes of earlier stages are allowed as they are;
// anything else (image ids, other hosts, other apps' repositories, URLs
// fetched by the daemon) is refused before the engine sees the file. The
// engine then parses exactly the lines checked here.
func pinDockerfile(ctx context.Context, dockerfile []byte, policy imagePolicy) ([]byte, error) {
	var out strings.Builder
	stages := map[string]bool{}
	nstages := 0
	for _, line := range logicalLines(dockerfile) {
		if line == "" {
			continue
		}
		if strings.HasSuffix(line, `\`) {
			return nil, fromErr("the Dockerfile ends in a line continuation")
		}
		fields := strings.Fields(line)
		inst := strings.ToUpper(fields[0])
		if inst == "ONBUILD" {
			// A trigger runs in a later build that uses this image as its
			// base: nothing it names could be checked then.
			if len(fields) > 1 && hasImageFlags(fields[2:]) {
				return nil, fromErr("ONBUILD may not name other images or stages (--from, --mount)")
			}
			if len(fields) > 1 && strings.EqualFold(fields[1], "ADD") && addsURL(fields[2:]) {
				return nil, fromErr("ADD may not fetch URLs: put the files in the upload")
			}
			out.WriteString(line + "\n")
			continue
		}
		switch inst {
		case "FROM":
			args := fields[1:]
			for len(args) > 0 && strings.HasPrefix(args[0], "--") {
				if strings.Contains(args[0], "$") {
					return nil, fromErr("variables in FROM are not allowed")
				}
				args = args[1:]
			}
			if len(args) == 0 {
				return nil, fromErr("FROM without an image")
			}
			if len(args) != 1 && !(len(args) == 3 && strings.EqualFold(args[1], "AS")) {
				return nil, fromErr("FROM takes an image and an optional AS name")
			}
			img := args[0]
			pinned, err := pinImage(ctx, img, stages, nstages, policy, false)
			if err != nil {
				return nil, err
			}
			fields[len(fields)-len(args)] = pinned
			if len(args) == 3 {
				stages[strings.ToLower(args[2])] = true
			}
			nstages++
			out.WriteString(strings.Join(fields, " ") + "\n")
			continue
		case "COPY", "ADD", "RUN":
			if nstages == 0 {
				return nil, fromErr(fmt.Sprintf("%s before the first FROM", inst))
			}
			if inst == "ADD" && addsURL(fields[1:]) {
				return nil, fromErr("ADD may not fetch URLs: put the files in the upload")
			}
			// Only the flags are rewritten: the rest of the line (a shell
			// command, JSON) goes to the engine byte for byte.
			inst, flags, rest := splitFlags(line)
			for i := range flags {
				flag, val, _ := strings.Cut(flags[i], "=")
				switch strings.ToLower(flag) {
				case "--from":
					pinned, err := pinImage(ctx, val, stages, nstages, policy, true)
					if err != nil {
						return nil, err
					}
					flags[i] = flag + "=" + pinned
				case "--mount":
					pinned, err := pinMount(ctx, val, stages, nstages, policy)
					if err != nil {
						return nil, err
					}
					flags[i] = flag + "=" + pinned
				case "--network", "--security":
					return nil, fromErr(fmt.Sprintf("%s %s is not allowed", inst, flag))
				}
			}
			out.WriteString(strings.Join(append(append([]string{inst}, flags...), rest), " ") + "\n")
			continue
		}
		out.WriteString(line + "\n")
	}
	if nstages == 0 {
		return nil, fromErr("Dockerfile has no FROM")
	}
	return []byte(out.String()), nil
}

// pinImage checks one image reference: scratch (FROM only), an earlier
// stage by name or index (COPY --from), or an image the policy allows,
// which it pins.
func pinImage(ctx context.Context, img string, stages map[string]bool, nstages int, policy imagePolicy, stageIndex bool) (string, error) {
	switch {
	case img == "":
		return "", fromErr("an empty image reference")
	case strings.ContainsAny(img, "$\"'`"):
		return "", fromErr(fmt.Sprintf("%s: variables and quotes in image references are not allowed", img))
	case strings.EqualFold(img, "scratch") && !stageIndex:
		return "scratch", nil
	case stages[strings.ToLower(img)]:
		return img, nil
	}
	if n, err := strconv.Atoi(img); err == nil && stageIndex {
		if n >= 0 && n < nstages {
			return img, nil
		}
		return "", fromErr(fmt.Sprintf("--from=%s: no such earlier stage", img))
	}
	return policy(ctx, img)
}

// pinMount checks the from= of a RUN --mount option.
func pinMount(ctx context.Context, spec string, stages map[string]bool, nstages int, policy imagePolicy) (string, error) {
	parts := strings.Split(spec, ",")
	for i, p := range parts {
		k, v, ok := strings.Cut(p, "=")
		if !ok || !strings.EqualFold(strings.TrimSpace(k), "from") {
			continue
		}
		pinned, err := pinImage(ctx, strings.TrimSpace(v), stages, nstages, policy, true)
		if err != nil {
			return "", err
		}
		parts[i] = k + "=" + pinned
	}
	return strings.Join(parts, ","), nil
}

// splitFlags cuts an instruction line into its keyword, its --flags and
// the rest of the line, untouched.
func splitFlags(line string) (inst string, flags []string, rest string) {
	inst, rest = line, ""
	if i := strings.IndexAny(line, " \t"); i >= 0 {
		inst, rest = line[:i], strings.TrimLeft(line[i:], " \t")
	}
	for strings.HasPrefix(rest, "--") {
		end := strings.IndexAny(rest, " \t")
		if end < 0 {
			end = len(rest)
		}
		flags = append(flags, rest[:end])
		rest = strings.TrimLeft(rest[end:], " \t")
	}
	return inst, flags, rest
}

// hasImageFlags tells whether instruction args name another image or stage.
func hasImageFlags(args []string) bool {
	for _, a := range args {
		if !strings.HasPrefix(a, "--") {
			return false
		}
		flag, _, _ := strings.Cut(strings.ToLower(a), "=")
		if flag == "--from" || flag == "--mount" || flag == "--network" || flag == "--security" {
			return true
		}
	}
	return false
}

// addsURL tells whether an ADD's sources include something the daemon
// would fetch over the network (it has the builder host's network).
func addsURL(args []string) bool {
	for _, a := range args {
		l := strings.ToLower(a)
		if strings.Contains(l, "://") || strings.HasPrefix(l, "git@") || strings.HasPrefix(l, "--checksum") || strings.HasPrefix(l, "--keep-git-dir") {
			return true
		}
	}
	return false
}

// errImageNotFound is what a resolver returns for a reference the registry
// does not have.
var errImageNotFound = errors.New("image not found")

// appImagePolicy allows the platform's stack images and the images builds
// of this app (by id, so not a former app of the same name) produced, on the
// platform registry under one of hosts, and pins them by digest: resolve
// gives a reference's manifest digest; ownBuild tells whether a build of the
// app produced the image <host>/<repo>@<digest>.
//
// The short form dinp/stacks/<name> (no registry host) is the platform
// registry's stack: without a tag or digest, its newest version, whose
// digest latestStack gives (errImageNotFound for no such stack).
func appImagePolicy(hosts []string, app string, resolve func(ctx context.Context, repo, ref string) (string, error),
	ownBuild func(ctx context.Context, repo, digest string) (bool, error),
	latestStack func(ctx context.Context, stack string) (string, error)) imagePolicy {
	return func(ctx context.Context, img string) (string, error) {
		refused := func(why string) error {
			return fromErr(fmt.Sprintf("%s: %s; a build may use only scratch, earlier stages, the platform stacks (%s…, %s/%s…) and images of this app (%s/%s)",
				img, why, StacksRepoPrefix, hosts[0], StacksRepoPrefix, hosts[0], app))
		}
		if rest, ok := strings.CutPrefix(img, StacksRepoPrefix); ok {
			stack, ref := rest, ""
			if i := strings.IndexAny(rest, ":@"); i >= 0 {
				stack, ref = rest[:i], rest[i:]
			}
			if !stackNameRE.MatchString(stack) {
				return "", refused("no such stack")
			}
			if ref != "" {
				// A version or digest: looked up like any full reference.
				return appImagePolicy(hosts, app, resolve, ownBuild, latestStack)(ctx, hosts[0]+"/"+img)
			}
			digest, err := latestStack(ctx, stack)
			if errors.Is(err, errImageNotFound) {
				return "", refused("no such stack")
			}
			if err != nil {
				return "", fmt.Errorf("stack %s: %w", stack, err)
			}
			return fmt.Sprintf("%s/%s%s@%s", hosts[0], StacksRepoPrefix, stack, digest), nil
		}
		ref, err := name.ParseReference(img, name.Insecure, name.StrictValidation)
		if err != nil {
			return "", refused("not a full image reference (image ids are not allowed)")
		}
		host := ref.Context().RegistryStr()
		known := false
		for _, h := range hosts {
			known = known || (h != "" && host == h)
		}
		if !known {
			return "", refused("not on the platform registry")
		}
		repo := ref.Context().RepositoryStr()
		stack := strings.HasPrefix(repo, StacksRepoPrefix)
		if !stack && repo != app {
			return "", refused("another repository")
		}
		digest, err := resolve(ctx, repo, ref.Identifier())
		if errors.Is(err, errImageNotFound) {
			return "", refused("no such image")
		}
		if err != nil {
			return "", fmt.Errorf("resolve %s: %w", img, err)
		}
		if !stack {
			ok, err := ownBuild(ctx, repo, digest)
			if err != nil {
				return "", fmt.Errorf("resolve %s: %w", img, err)
			}
			if !ok {
				return "", refused("not built by this app")
			}
		}
		return fmt.Sprintf("%s/%s@%s", host, repo, digest), nil
	}
}

// stackNameRE is what a stack's name looks like in dinp/stacks/<name>.
var stackNameRE = regexp.MustCompile(`^[a-z][a-z0-9]{0,15}$`)

func fromErr(msg string) error {
	return common.Errf(http.StatusUnprocessableEntity, "from_not_allowed", msg)
}
