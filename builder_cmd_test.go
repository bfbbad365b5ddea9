package main

import (
	"bytes"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/spf13/cobra"
)

func TestBuilderCmdStacks(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/v1/stacks" || r.Header.Get("Authorization") != "Bearer tok" {
			http.Error(w, `{"error":{"code":"unauthorized","message":"no"}}`, http.StatusUnauthorized)
			return
		}
		w.Write([]byte(`{"stacks":[{"name":"binary","description":"d","image":"127.0.0.1:5000/dinp/stacks/binary@sha256:ab","size_bytes":2500000,"pushed":true},{"name":"dockerfile","description":"e","pushed":false}]}`))
	}))
	defer srv.Close()

	root := &cobra.Command{Use: "dinp"}
	root.AddCommand(&cobra.Command{Use: "builder"})
	builderCmdAttach(root)
	tests := []struct {
		name  string
		token string
		want  string
		fail  bool
	}{
		{"lists stacks", "tok", "127.0.0.1:5000/dinp/stacks/binary@sha256:ab", false},
		{"wrong token", "nope", "", true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var out bytes.Buffer
			root.SetOut(&out)
			root.SetArgs([]string{"builder", "stacks", "--builder-url", srv.URL, "--cluster-token", tt.token})
			err := root.Execute()
			if (err != nil) != tt.fail {
				t.Fatalf("err = %v, want failure %v", err, tt.fail)
			}
			if !strings.Contains(out.String(), tt.want) || (!tt.fail && !strings.Contains(out.String(), "2.5 MB")) {
				t.Errorf("output = %q", out.String())
			}
		})
	}
}
