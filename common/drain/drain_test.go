package drain

import (
	"bufio"
	"context"
	"io"
	"net"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/dinp/dinp/common"
)

func TestParse(t *testing.T) {
	for _, tc := range []struct {
		in, kind, addr, err string
	}{
		{in: "syslog://logs.example.com:514", kind: Syslog, addr: "logs.example.com:514"},
		{in: "syslog+tls://10.1.2.3:6514/", kind: SyslogTLS, addr: "10.1.2.3:6514"},
		{in: "https://logs.example.com/ingest?t=1", kind: HTTPS, addr: "logs.example.com:443"},
		{in: "https://[::1]:8443/x", kind: HTTPS, addr: "[::1]:8443"},
		{in: "syslog://logs.example.com", err: "needs a port"},
		{in: "syslog://u:p@logs.example.com:514", err: "nothing more"},
		{in: "syslog://logs.example.com:99999", err: "invalid port"},
		{in: "http://logs.example.com/", err: "unsupported scheme"},
		{in: "udp://logs.example.com:514", err: "unsupported scheme"},
		{in: "https:///nohost", err: "no host"},
		{in: "", err: "characters"},
		{in: "https://x/" + strings.Repeat("a", MaxURLLen), err: "characters"},
	} {
		got, err := Parse(tc.in)
		if tc.err != "" {
			if err == nil || !strings.Contains(err.Error(), tc.err) {
				t.Errorf("Parse(%q) = %+v, %v; want error %q", tc.in, got, err, tc.err)
			}
			continue
		}
		if err != nil || got.Kind != tc.kind || got.Addr != tc.addr {
			t.Errorf("Parse(%q) = %+v, %v", tc.in, got, err)
		}
	}
}

func TestFormat(t *testing.T) {
	at := time.Date(2026, 11, 29, 10, 0, 0, 5000, time.UTC)
	for _, tc := range []struct {
		e    common.LogEntry
		want string
	}{
		{common.LogEntry{Source: common.LogSourceApp, Instance: "3f2a", Stream: "stdout", Line: "hello", At: at},
			"<14>1 2026-11-29T10:00:00.000005Z h web 3f2a app - hello"},
		{common.LogEntry{Source: common.LogSourceApp, Instance: "3f2a", Stream: "stderr", Line: "a\nb\r", At: at},
			"<11>1 2026-11-29T10:00:00.000005Z h web 3f2a app - a b "},
		{common.LogEntry{Source: common.LogSourceBuild, Build: 7, Line: "step 1", At: at},
			"<14>1 2026-11-29T10:00:00.000005Z h web build-7 build - step 1"},
		{common.LogEntry{Source: common.LogSourcePlatform, Line: "exited", At: at},
			"<14>1 2026-11-29T10:00:00.000005Z h web platform platform - exited"},
	} {
		if got := Format("h", "web", tc.e); got != tc.want {
			t.Errorf("Format(%+v)\n got %q\nwant %q", tc.e, got, tc.want)
		}
	}
}

// Lines arrive framed by octet counting, in order; an internal address is
// refused unless allowed.
func TestSyslogSink(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	got := make(chan string, 10)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		defer c.Close()
		br := bufio.NewReader(c)
		for {
			n, err := br.ReadString(' ')
			if err != nil {
				return
			}
			size, _ := strconv.Atoi(strings.TrimSpace(n))
			buf := make([]byte, size)
			if _, err := io.ReadFull(br, buf); err != nil {
				return
			}
			got <- string(buf)
		}
	}()
	target, _ := Parse("syslog://" + ln.Addr().String())
	refused := New(target, Options{})
	if err := refused.Send(context.Background(), "web", []common.LogEntry{{Line: "x"}}); err == nil || !strings.Contains(err.Error(), "internal address") {
		t.Fatalf("send to loopback without AllowInternal: %v", err)
	}
	s := New(target, Options{AllowInternal: true, Hostname: "h"})
	defer s.Close()
	batch := []common.LogEntry{{Source: "app", Line: "one"}, {Source: "app", Line: "two with spaces"}}
	if err := s.Send(context.Background(), "web", batch); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"one", "two with spaces"} {
		select {
		case line := <-got:
			if !strings.HasSuffix(line, " - "+want) {
				t.Fatalf("got %q, want a line ending in %q", line, want)
			}
		case <-time.After(5 * time.Second):
			t.Fatalf("%q not received", want)
		}
	}
}
