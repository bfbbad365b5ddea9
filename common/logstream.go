package common

import "encoding/json"

// LogStreamMaxLen caps an app's log stream (Keys.Logs), approximately
// (Redis trims whole macro nodes): the newest ~10,000 lines are kept.
const LogStreamMaxLen = 10000

// logField is the stream entry field that holds the JSON LogEntry.
const logField = "e"

// LogSourceBuild marks the builder's lines of a build.
const LogSourceBuild = "build"

// Fields is e as the values of one stream entry (XADD).
func (e LogEntry) Fields() map[string]any {
	raw, _ := json.Marshal(e) // a LogEntry always encodes
	return map[string]any{logField: string(raw)}
}

// DecodeLogEntry reads a stream entry's values (XRANGE, XREAD) back into a
// LogEntry; ok is false for an entry that is not one.
func DecodeLogEntry(values map[string]any) (e LogEntry, ok bool) {
	raw, isString := values[logField].(string)
	if !isString {
		return e, false
	}
	return e, json.Unmarshal([]byte(raw), &e) == nil
}
