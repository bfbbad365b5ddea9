package cli

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/dinp/dinp/dash/api"
)

// sparkWidth is how many characters a sparkline takes; longer series are
// averaged into that many buckets.
const sparkWidth = 60

// metricsCommand is `dinp metrics APP [--window 1h|6h|24h] [--json]`.
func metricsCommand(f *appFlags) *cobra.Command {
	var window string
	cmd := f.withJSON(f.withApp(&cobra.Command{
		Use:   "metrics [APP]",
		Short: "Show an app's requests, latency, errors and its instances' CPU and memory, with sparklines",
		Args:  cobra.MaximumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if window != "1h" && window != "6h" && window != "24h" {
				return &exitError{code: exitUsage, err: errors.New("--window must be 1h, 6h or 24h")}
			}
			name, _, c, err := f.appClient(args)
			if err != nil {
				return err
			}
			var raw json.RawMessage
			if err := c.call("GET", appPath(name, "/metrics?window="+url.QueryEscape(window)), nil, "", &raw); err != nil {
				return err
			}
			if f.asJSON {
				return printJSON(cmd.OutOrStdout(), raw)
			}
			var m api.AppMetrics
			if err := json.Unmarshal(raw, &m); err != nil {
				return fmt.Errorf("decode metrics: %w", err)
			}
			printMetrics(cmd.OutOrStdout(), m)
			return nil
		},
	}))
	cmd.Flags().StringVarP(&window, "window", "w", "1h", "window: 1h (10 s steps), 6h or 24h (1 min steps)")
	return cmd
}

// printMetrics writes the headline, one sparkline per series and per
// instance, and the window's events.
func printMetrics(w io.Writer, m api.AppMetrics) {
	s := m.Summary
	fmt.Fprintf(w, "%s: last %s at %d s steps\n", m.App, m.Window, m.Step)
	fmt.Fprintf(w, "  %s req/s · p50 %s · p99 %s · %s%% 5xx · %d requests in %s", num(s.RequestsPerSec), ms(s.P50ms), ms(s.P99ms),
		strconv.FormatFloat(100*s.ErrorRate, 'f', 2, 64), s.Requests, m.Window)
	if s.MemoryLimit > 0 || s.MemoryBytes > 0 {
		fmt.Fprintf(w, " · memory %s of %s", mb(float64(s.MemoryBytes)), mb(float64(s.MemoryLimit)))
	}
	fmt.Fprintln(w)
	fmt.Fprintln(w)
	t := newTable(w)
	fmt.Fprintf(t, "SERIES\tLATEST\tPEAK\t%s\n", sparkHeader(m))
	for _, sr := range []struct {
		name string
		vals []*float64
	}{{"requests/s", m.RequestsPerSec}, {"4xx/s", m.Rate4xx}, {"5xx/s", m.Rate5xx},
		{"p50 ms", m.P50ms}, {"p95 ms", m.P95ms}, {"p99 ms", m.P99ms}, {"bytes/s", m.BytesPerSec}} {
		fmt.Fprintf(t, "%s\t%s\t%s\t%s\n", sr.name, ptr(latest(sr.vals), num), ptr(peak(sr.vals), num), spark(sr.vals, sparkWidth))
	}
	t.Flush()
	fmt.Fprintln(w)
	if len(m.Instances) == 0 {
		fmt.Fprintln(w, "no instance reported in the window")
	} else {
		t = newTable(w)
		fmt.Fprintln(t, "INSTANCE\tNODE\tRELEASE\tCPU\tMEMORY\tRESTARTS\tCPU %\tMEMORY")
		for _, in := range m.Instances {
			mem := ptr(latest(in.MemoryBytes), mb)
			if in.MemoryLimit > 0 {
				mem += "/" + mb(float64(in.MemoryLimit))
			}
			fmt.Fprintf(t, "%s\t%s\tv%d\t%s\t%s\t%d\t%s\t%s\n", short(in.ID), in.Node, in.Release,
				ptr(latest(in.CPUPercent), func(v float64) string { return num(v) + "%" }), mem, in.Restarts,
				spark(in.CPUPercent, sparkWidth/2), spark(in.MemoryBytes, sparkWidth/2))
		}
		t.Flush()
	}
	if len(m.Events) > 0 {
		fmt.Fprintln(w)
		for _, e := range m.Events {
			fmt.Fprintf(w, "%s  %-8s %s\n", time.Unix(e.Time, 0).UTC().Format("15:04:05"), e.Kind, e.Message)
		}
	}
}

// sparkHeader names the sparkline column with the window's start and end.
func sparkHeader(m api.AppMetrics) string {
	if len(m.Time) == 0 {
		return "SPARKLINE"
	}
	return fmt.Sprintf("SPARKLINE %s–%s UTC", time.Unix(m.Time[0], 0).UTC().Format("15:04"),
		time.Unix(m.Time[len(m.Time)-1]+int64(m.Step), 0).UTC().Format("15:04"))
}

var sparkRunes = []rune("▁▂▃▄▅▆▇█")

// spark draws vals in at most width characters, from the lowest bar for
// zero to the highest for the series' peak; a bucket without values is a
// space, so gaps stay visible.
func spark(vals []*float64, width int) string {
	if len(vals) == 0 {
		return ""
	}
	n := min(width, len(vals))
	buckets := make([]*float64, n)
	for b := range n {
		lo, hi := b*len(vals)/n, (b+1)*len(vals)/n
		sum, k := 0.0, 0
		for _, v := range vals[lo:hi] {
			if v != nil {
				sum, k = sum+*v, k+1
			}
		}
		if k > 0 {
			avg := sum / float64(k)
			buckets[b] = &avg
		}
	}
	top := 0.0
	for _, v := range buckets {
		if v != nil {
			top = math.Max(top, *v)
		}
	}
	var sb strings.Builder
	for _, v := range buckets {
		switch {
		case v == nil:
			sb.WriteByte(' ')
		case top <= 0:
			sb.WriteRune(sparkRunes[0])
		default:
			i := int(math.Round(*v / top * float64(len(sparkRunes)-1)))
			sb.WriteRune(sparkRunes[max(0, min(i, len(sparkRunes)-1))])
		}
	}
	return strings.TrimRight(sb.String(), " ")
}

func latest(vals []*float64) *float64 {
	for i := len(vals) - 1; i >= 0; i-- {
		if vals[i] != nil {
			return vals[i]
		}
	}
	return nil
}

func peak(vals []*float64) *float64 {
	var p *float64
	for _, v := range vals {
		if v != nil && (p == nil || *v > *p) {
			p = v
		}
	}
	return p
}

func ptr(v *float64, f func(float64) string) string {
	if v == nil {
		return "–"
	}
	return f(*v)
}

// num formats a figure with three significant digits or so.
func num(v float64) string {
	switch a := math.Abs(v); {
	case a >= 1e6:
		return strconv.FormatFloat(v/1e6, 'f', 1, 64) + "M"
	case a >= 1e4:
		return strconv.FormatFloat(v/1e3, 'f', 1, 64) + "k"
	case a >= 100:
		return strconv.FormatFloat(v, 'f', 0, 64)
	case a >= 10:
		return strconv.FormatFloat(v, 'f', 1, 64)
	}
	return strconv.FormatFloat(v, 'f', 2, 64)
}

func ms(v *float64) string { return ptr(v, func(x float64) string { return num(x) + " ms" }) }

func mb(bytes float64) string { return num(bytes/(1<<20)) + " MB" }

func short(id string) string {
	if len(id) > 12 {
		return id[:12]
	}
	return id
}
