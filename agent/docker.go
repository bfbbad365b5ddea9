package agent

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"

	cerrdefs "github.com/containerd/errdefs"
	"github.com/distribution/reference"
	"github.com/docker/docker/api/types/container"
	"github.com/docker/docker/api/types/image"
	"github.com/docker/docker/api/types/network"
	"github.com/docker/docker/api/types/registry"
	"github.com/docker/docker/client"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
)

// Docker is the part of the engine API the agent uses. *client.Client
// implements it; tests use a fake. Keeping it this small means a move to
// moby/moby/client only touches this package.
type Docker interface {
	ContainerList(ctx context.Context, opts container.ListOptions) ([]container.Summary, error)
	ContainerInspect(ctx context.Context, id string) (container.InspectResponse, error)
	ContainerCreate(ctx context.Context, cfg *container.Config, host *container.HostConfig, net *network.NetworkingConfig, platform *ocispec.Platform, name string) (container.CreateResponse, error)
	ContainerStart(ctx context.Context, id string, opts container.StartOptions) error
	ContainerStop(ctx context.Context, id string, opts container.StopOptions) error
	ContainerRemove(ctx context.Context, id string, opts container.RemoveOptions) error
	ContainerLogs(ctx context.Context, id string, opts container.LogsOptions) (io.ReadCloser, error)
	ContainerStats(ctx context.Context, id string, stream bool) (container.StatsResponseReader, error)
	ImageInspect(ctx context.Context, ref string, opts ...client.ImageInspectOption) (image.InspectResponse, error)
	ImagePull(ctx context.Context, ref string, opts image.PullOptions) (io.ReadCloser, error)
}

var _ Docker = (*client.Client)(nil)

// NewDockerFromEnv returns the engine client configured by DOCKER_HOST and
// friends, negotiating the API version (engines as old as API 1.41).
func NewDockerFromEnv() (*client.Client, error) {
	c, err := client.NewClientWithOpts(client.FromEnv, client.WithAPIVersionNegotiation())
	if err != nil {
		return nil, fmt.Errorf("docker client: %w", err)
	}
	return c, nil
}

// isNotFound and isConflict classify engine errors the agent treats as
// success: the converge step is idempotent.
func isNotFound(err error) bool { return err != nil && cerrdefs.IsNotFound(err) }
func isConflict(err error) bool { return err != nil && cerrdefs.IsConflict(err) }

// registryAuth encodes the X-Registry-Auth header for the registry of ref.
func registryAuth(ref, user, password string) (string, error) {
	server := ""
	if named, err := reference.ParseNormalizedNamed(ref); err == nil {
		server = reference.Domain(named)
	}
	return registry.EncodeAuthConfig(registry.AuthConfig{Username: user, Password: password, ServerAddress: server})
}

// pullImage pulls ref and reads the progress stream to its end: the engine
// reports a failed pull inside the stream, with a 200 status.
func pullImage(ctx context.Context, d Docker, ref, auth string) error {
	rc, err := d.ImagePull(ctx, ref, image.PullOptions{RegistryAuth: auth})
	if err != nil {
		return fmt.Errorf("pull %s: %w", ref, err)
	}
	defer rc.Close()
	dec := json.NewDecoder(rc)
	for {
		var msg struct {
			Error       string `json:"error"`
			ErrorDetail struct {
				Message string `json:"message"`
			} `json:"errorDetail"`
		}
		if err := dec.Decode(&msg); err != nil {
			if errors.Is(err, io.EOF) {
				return nil
			}
			return fmt.Errorf("pull %s: read progress: %w", ref, err)
		}
		if msg.Error != "" {
			return fmt.Errorf("pull %s: %s", ref, msg.Error)
		}
		if msg.ErrorDetail.Message != "" {
			return fmt.Errorf("pull %s: %s", ref, msg.ErrorDetail.Message)
		}
	}
}
