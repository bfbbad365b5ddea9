package common

import "testing"

func TestCompareVersions(t *testing.T) {
	for _, tc := range []struct {
		a, b string
		cmp  int
		ok   bool
	}{
		{"v1.4.2", "v1.4.2", 0, true},
		{"v1.4.2", "v1.5.0", -1, true},
		{"1.10", "v1.9.9", 1, true},
		{"v2.0.0-rc1", "v2.0.0", -1, true},
		{"v2.0.0", "v2.0.0-rc1", 1, true},
		{"v2.0.0-rc1", "v2.0.0-rc2", -1, true},
		{"dev", "v1.0.0", 0, false},
		{"v1.0.0", "", 0, false},
		{"v1.2.3.4", "v1.0.0", 0, false},
	} {
		if cmp, ok := CompareVersions(tc.a, tc.b); cmp != tc.cmp || ok != tc.ok {
			t.Errorf("CompareVersions(%q, %q) = %d, %v; want %d, %v", tc.a, tc.b, cmp, ok, tc.cmp, tc.ok)
		}
	}
	if !Outdated("v1.3.0", "v1.4.0") || Outdated("dev", "v1.4.0") || Outdated("v1.4.0", "v1.4.0") {
		t.Error("Outdated")
	}
}
