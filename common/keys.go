package common

// DefaultKeyPrefix prefixes every Redis key of a dinp installation.
const DefaultKeyPrefix = "dinp"

// Keys names every Redis key dinp uses. Components never spell a key
// themselves. The prefix lets tests and several installations share one Redis.
type Keys struct {
	Prefix string
}

// NewKeys returns the key set for prefix ("" means DefaultKeyPrefix).
func NewKeys(prefix string) Keys {
	if prefix == "" {
		prefix = DefaultKeyPrefix
	}
	return Keys{Prefix: prefix}
}

func (k Keys) p(s string) string {
	if k.Prefix == "" {
		return DefaultKeyPrefix + ":" + s
	}
	return k.Prefix + ":" + s
}

// Routes is the hash host → JSON Route.
func (k Keys) Routes() string { return k.p("routes") }

// RoutesChanged is the pub/sub channel carrying a host whose route changed.
func (k Keys) RoutesChanged() string { return k.p("routes:changed") }

// RoutesVersion is the counter bumped on every route write.
func (k Keys) RoutesVersion() string { return k.p("routes:version") }

// Node is the last heartbeat of one node (JSON Heartbeat, with a TTL).
func (k Keys) Node(id string) string { return k.p("node:" + id) }

// Nodes is the set of node ids that have sent a heartbeat.
func (k Keys) Nodes() string { return k.p("nodes") }

// Assignments is the hash node → JSON []Assignment, written by the leader.
func (k Keys) Assignments() string { return k.p("assignments") }

// Health is the hash instance → JSON HealthStatus, written by hm.
func (k Keys) Health() string { return k.p("health") }

// HealthEvents is the pub/sub channel of JSON HealthStatus changes.
func (k Keys) HealthEvents() string { return k.p("health:events") }

// DesiredChanged is the pub/sub channel on which dash announces a change of
// desired state (the app name), so the leader reconciles at once.
func (k Keys) DesiredChanged() string { return k.p("desired:changed") }

// Logs is the capped stream of an app's log lines (LogEntry.Fields, DecodeLogEntry).
func (k Keys) Logs(app string) string { return k.p("logs:" + app) }

// TaskLogs is the stream of one task's output (JSON LogEntry in field "e").
func (k Keys) TaskLogs(id string) string { return k.p("task-logs:" + id) }

// LogCursors is a hash per node: container id → the Docker timestamp of the
// container's last line shipped to its app's log stream, so an agent that
// restarts ships what was written while it was down, once.
func (k Keys) LogCursors(node string) string { return k.p("log-cursors:" + node) }

// Leader holds the id of the current leader server, for display.
func (k Keys) Leader() string { return k.p("leader") }

// NodeSecrets is the hash node id → SHA-256 of the node's identity secret:
// a cache of the node_secrets table (the source of truth, in MySQL), read
// by every heartbeat.
func (k Keys) NodeSecrets() string { return k.p("node-secrets") }

// NodeDigests is the hash node id → digest of its last heartbeat report,
// so a server pokes the leader only when a node's report changed.
func (k Keys) NodeDigests() string { return k.p("node-digests") }

// HMMembers is the sorted set of live hm ids scored by their last heartbeat
// (Redis server time, ms); hm instances shard the probes among its members.
func (k Keys) HMMembers() string { return k.p("hm:members") }

// Epoch is the store-epoch marker (see StoreEpoch): a random value set by
// the first component that finds it missing. Its loss means Redis lost its
// data.
func (k Keys) Epoch() string { return k.p("epoch") }

// RoutesComplete holds the epoch marker of the store for which the leader
// has written every route. A router replaces its whole table from the
// routes hash only while this matches Epoch: after Redis lost its data the
// hash fills up one route at a time, and a partial hash must not read as
// "these are all the apps".
func (k Keys) RoutesComplete() string { return k.p("routes:complete") }

// Status is the hash member id → JSON ComponentStatus of one role (see
// ReportStatus): each server, router, hm and registry refreshes its own
// field; dash reads them for the Cluster page.
func (k Keys) Status(role string) string { return k.p("status:" + role) }

// MetricsApp is an app's traffic ring at one resolution (step 10 or 60
// seconds): a string of fixed-size slots that every router adds its
// counts to (see package common/appmetrics).
func (k Keys) MetricsApp(app string, step int) string {
	return k.p("metrics:" + app + ":" + stepName(step))
}

// MetricsInstance is one instance's resource ring at one resolution,
// written by the agent of its node.
func (k Keys) MetricsInstance(app, instance string, step int) string {
	return k.MetricsInstancePrefix(app) + instance + MetricsInstanceSuffix(step)
}

// MetricsInstanceSuffix ends every MetricsInstance key of one resolution.
func MetricsInstanceSuffix(step int) string { return ":" + stepName(step) }

// MetricsInstancePrefix prefixes every MetricsInstance key of app (the
// metrics reader builds the keys of the instances it finds).
func (k Keys) MetricsInstancePrefix(app string) string { return k.p("metrics:" + app + ":i:") }

// MetricsInstances is the sorted set of an app's instances that reported
// resources, scored by the Unix second of their last report; a member is
// "<instance> <node> <release> <memory limit>".
func (k Keys) MetricsInstances(app string) string { return k.p("metrics:" + app + ":instances") }

func stepName(step int) string {
	if step == 60 {
		return "1m"
	}
	return "10s"
}

// ACMEChallenge is the key authorization of one pending ACME HTTP-01
// challenge (a string with a TTL): the leader's certificate issuer writes
// it, every router answers it at
// http://<host>/.well-known/acme-challenge/<token>.
func (k Keys) ACMEChallenge(host, token string) string {
	return k.p("acme-challenge:" + host + ":" + token)
}

// Certs is the hash host → JSON Cert of the ACME certificates of verified
// custom domains: the leader writes it (from MySQL, its source of truth),
// routers serve it by SNI.
func (k Keys) Certs() string { return k.p("certs") }

// CertsChanged is the pub/sub channel carrying a host whose certificate
// was written or removed.
func (k Keys) CertsChanged() string { return k.p("certs:changed") }

// CertsComplete holds the epoch marker of the store for which the leader
// has written every certificate (as RoutesComplete does for routes): only
// then may a router drop a certificate missing from the hash.
func (k Keys) CertsComplete() string { return k.p("certs:complete") }
