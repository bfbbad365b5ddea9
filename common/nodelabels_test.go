package common

import (
	"testing"
)

// TestParseLabelArgs: `dinp nodes label NODE k=v k-` sets and removes.
func TestParseLabelArgs(t *testing.T) {
	got, err := ParseLabelArgs([]string{"zone=b", "gpu-", "empty="})
	if err != nil || len(got) != 3 || got["zone"] == nil || *got["zone"] != "b" || got["gpu"] != nil ||
		got["empty"] == nil || *got["empty"] != "" {
		t.Fatalf("%v %v", got, err)
	}
	for _, bad := range []string{"zone", "=b", "-"} {
		if _, err := ParseLabelArgs([]string{bad}); err == nil {
			t.Errorf("%q accepted", bad)
		}
	}
}
