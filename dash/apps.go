package dash

import (
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"regexp"
	"sort"
	"strconv"
	"strings"

	"github.com/gin-gonic/gin"

	"github.com/dinp/dinp/common"
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
	maxJSONBody   = 1 << 20
	maxEnvValue   = 32 << 10
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

// decodeJSON reads a JSON request body into v. An empty body leaves v as
// is; unknown fields are rejected so typos do not pass silently.
func decodeJSON(c *gin.Context, v any) error {
	dec := json.NewDecoder(http.MaxBytesReader(c.Writer, c.Request.Body, maxJSONBody))
	dec.DisallowUnknownFields()
	err := dec.Decode(v)
	var tooBig *http.MaxBytesError
	switch {
	case err == nil, errors.Is(err, io.EOF):
		return nil
	case errors.As(err, &tooBig):
		return common.Errf(http.StatusRequestEntityTooLarge, "too_large", "request body too large")
	default:
		return common.Errf(http.StatusBadRequest, "bad_request", "invalid JSON body: "+err.Error())
	}
}

func invalid(code, message string) error {
	return common.Errf(http.StatusUnprocessableEntity, code, message)
}

// validateLimits checks the limits that are set.
func validateLimits(instances, memoryMB, cpuShares *int) error {
	if instances != nil && (*instances < 0 || *instances > MaxInstances) {
		return invalid("invalid_instances", "instances must be between 0 and "+strconv.Itoa(MaxInstances))
	}
	if memoryMB != nil && (*memoryMB < MinMemoryMB || *memoryMB > MaxMemoryMB) {
		return invalid("invalid_memory", "memory_mb must be between "+strconv.Itoa(MinMemoryMB)+" and "+strconv.Itoa(MaxMemoryMB))
	}
	if cpuShares != nil && (*cpuShares < MinCPUShares || *cpuShares > MaxCPUShares) {
		return invalid("invalid_cpu_shares", "cpu_shares must be between "+strconv.Itoa(MinCPUShares)+" and "+strconv.Itoa(MaxCPUShares))
	}
	return nil
}

var envNameRE = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]{0,127}$`)

// validateEnvName rejects names that are not portable env variables and the
// names the platform sets itself (PORT, DINP_*), which an app must not
// override.
func validateEnvName(k string) error {
	if !envNameRE.MatchString(k) {
		return invalid("invalid_env", "invalid env name "+strconv.Quote(k))
	}
	if k == "PORT" || strings.HasPrefix(strings.ToUpper(k), "DINP_") {
		return invalid("invalid_env", "env name "+k+" is reserved by the platform")
	}
	return nil
}

func validateEnv(set map[string]string, unset []string) error {
	for k, v := range set {
		if err := validateEnvName(k); err != nil {
			return err
		}
		if len(v) > maxEnvValue || strings.ContainsRune(v, 0) {
			return invalid("invalid_env", "value of "+k+" is too long or contains NUL")
		}
	}
	for _, k := range unset {
		if err := validateEnvName(k); err != nil {
			return err
		}
	}
	return nil
}

func validHealthPath(p string) bool {
	return p == "" || (strings.HasPrefix(p, "/") && len(p) <= 512 && !strings.ContainsAny(p, " \t\r\n"))
}

// summarize is an app's line in the app list (API and dashboard).
func summarize(v App, a appRow) AppSummary {
	sum := AppSummary{App: v, Running: a.Running, Placed: a.Placed, Crashed: a.Crashed,
		Stack: a.Stack, StackVersion: a.StackVersion, StackLatest: a.StackLatest}
	// Versions are UTC build times (20060102.150405): they sort as text.
	sum.StackOutdated = a.StackVersion != "" && a.StackLatest > a.StackVersion
	sum.State = appState(sum)
	return sum
}

const appKey = "dash.app"

func appOf(c *gin.Context) appRow { return c.MustGet(appKey).(appRow) }

func joinSorted(s []string) string {
	s = append([]string(nil), s...)
	sort.Strings(s)
	return strings.Join(s, ",")
}

func joinList(s []string) string { return strings.Join(s, ", ") }

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n]
}
