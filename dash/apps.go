package dash

import (
	"github.com/dinp/dinp/dash/api"
)

// Limits of an app's desired state.
const (
	MaxInstances  = 100
	MinMemoryMB   = 16
	MaxMemoryMB   = 65536
	MinCPUShares  = 2
	MaxCPUShares  = 262144
	defaultMemory = 128
	defaultCPU    = 256
	listLimit     = 100
)

type App = api.App

type AppSummary = api.AppSummary

type Instance = api.Instance

type AppDetail = api.AppDetail

type CreateAppRequest = api.CreateAppRequest

type ScaleRequest = api.ScaleRequest

type EnvRequest = api.EnvRequest

type RollbackRequest = api.RollbackRequest
