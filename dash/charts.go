package dash

import (
	"fmt"
	"html/template"
	"math"
	"strconv"
	"strings"
	"time"

	"github.com/dinp/dinp/dash/api"
)

// Server-rendered charts: an app's metrics become inline SVG that any
// browser draws without a script, and that the page swaps every few
// seconds to refresh (static/app.js). Only presentation attributes and
// classes are used, so the page's Content-Security-Policy (no inline
// styles) holds.

// Chart geometry in SVG user units; the SVG scales to its box.
const (
	chartW, chartH           = 600, 170
	chartLeft, chartRight    = 46, 8
	chartTop, chartBottom    = 8, 20
	sparkW, sparkH, sparkPad = 120, 24, 2
)

// chartSeries is one line of a chart: a value per step, nil for a gap.
type chartSeries struct {
	Label  string
	Values []*float64
	Class  string // s0…s5 for the colour; by position when empty
}

// class is the series' colour class at position i.
func (s chartSeries) class(i int) string {
	if s.Class != "" {
		return s.Class
	}
	return "s" + strconv.Itoa(i%6)
}

// lineChart is one chart of an app's metrics over a window.
type lineChart struct {
	Title  string
	Unit   string // shown after the headline and in tooltips
	Time   []int64
	Step   int64
	Series []chartSeries
	Events []api.MetricEvent
	// Limit, when set, is drawn as a dashed horizontal line (a memory
	// limit) and included in the scale.
	Limit *float64
}

// yScale is the value axis: 0 to Max in Ticks steps of Step.
type yScale struct {
	Max, Step float64
	Ticks     int
}

// niceScale picks the smallest step of 1, 2, 2.5 or 5 × 10^k that fits the
// largest value within five gridlines.
func niceScale(max float64) yScale {
	if !(max > 0) || math.IsInf(max, 0) {
		return yScale{Max: 1, Step: 0.25, Ticks: 4}
	}
	mag := math.Pow(10, math.Floor(math.Log10(max/5)))
	// max < 50×mag, so 10×mag always fits.
	for _, m := range []float64{1, 2, 2.5, 5, 10} {
		step := m * mag
		if ticks := int(math.Ceil(max/step - 1e-9)); ticks <= 5 {
			return yScale{Max: float64(ticks) * step, Step: step, Ticks: ticks}
		}
	}
	return yScale{Max: 10 * mag * 5, Step: 10 * mag, Ticks: 5}
}

// label formats a tick with as many decimals as the step needs.
func (s yScale) label(v float64) string {
	dec := 0
	if s.Step < 1 {
		dec = int(math.Ceil(-math.Log10(s.Step) - 1e-9))
		if s.Step*math.Pow(10, float64(dec)) != math.Trunc(s.Step*math.Pow(10, float64(dec))) {
			dec++
		}
	}
	if v >= 10000 && dec == 0 {
		return strconv.FormatFloat(v/1000, 'f', -1, 64) + "k"
	}
	return strconv.FormatFloat(v, 'f', dec, 64)
}

// span is the chart's time range [from, to] in Unix seconds.
func (c lineChart) span() (from, to int64) {
	if len(c.Time) == 0 {
		return 0, 1
	}
	from, to = c.Time[0], c.Time[len(c.Time)-1]
	if to <= from {
		to = from + max(c.Step, 1)
	}
	return from, to
}

func (c lineChart) x(t int64) float64 {
	from, to := c.span()
	return chartLeft + float64(t-from)/float64(to-from)*(chartW-chartLeft-chartRight)
}

func (s yScale) y(v float64) float64 {
	return chartTop + (1-v/s.Max)*(chartH-chartTop-chartBottom)
}

// scale is the y axis fitting every value and the limit.
func (c lineChart) scale() (yScale, bool) {
	top, any := 0.0, false
	for _, s := range c.Series {
		for _, v := range s.Values {
			if v != nil {
				top, any = math.Max(top, *v), true
			}
		}
	}
	if c.Limit != nil {
		top = math.Max(top, *c.Limit)
	}
	return niceScale(top), any
}

// timeTicks returns the round times to label: every 5 min up to every 6 h,
// the first spacing giving at most six labels.
func (c lineChart) timeTicks() []int64 {
	from, to := c.span()
	every := int64(6 * 3600)
	for _, e := range []int64{300, 600, 900, 1800, 3600, 7200, 4 * 3600, 6 * 3600} {
		if (to-from)/e <= 6 {
			every = e
			break
		}
	}
	var out []int64
	for t := (from + every - 1) / every * every; t <= to; t += every {
		out = append(out, t)
	}
	return out
}

// path draws the values as polylines, starting a new one after each gap;
// a value alone between gaps becomes a dot.
func (c lineChart) path(vals []*float64, s yScale) (d string, dots [][2]float64) {
	var b strings.Builder
	var run [][2]float64
	flush := func() {
		switch len(run) {
		case 0:
		case 1:
			dots = append(dots, run[0])
		default:
			for i, p := range run {
				cmd := "L"
				if i == 0 {
					cmd = "M"
				}
				fmt.Fprintf(&b, "%s%.1f %.1f", cmd, p[0], p[1])
			}
		}
		run = run[:0]
	}
	for i, v := range vals {
		if i >= len(c.Time) {
			break
		}
		if v == nil {
			flush()
			continue
		}
		run = append(run, [2]float64{c.x(c.Time[i]), s.y(*v)})
	}
	flush()
	return b.String(), dots
}

// SVG renders the chart.
func (c lineChart) SVG() template.HTML {
	var b strings.Builder
	s, hasData := c.scale()
	fmt.Fprintf(&b, `<svg class="chart" viewBox="0 0 %d %d" role="img" aria-label="%s">`, chartW, chartH, esc(c.Title))
	// Gridlines and value labels.
	for i := 0; i <= s.Ticks; i++ {
		v := float64(i) * s.Step
		y := s.y(v)
		fmt.Fprintf(&b, `<line class="grid" x1="%d" x2="%d" y1="%.1f" y2="%.1f"/>`, chartLeft, chartW-chartRight, y, y)
		fmt.Fprintf(&b, `<text class="ylabel" x="%d" y="%.1f" text-anchor="end" dominant-baseline="middle">%s</text>`, chartLeft-4, y, s.label(v))
	}
	for _, t := range c.timeTicks() {
		x := c.x(t)
		fmt.Fprintf(&b, `<text class="xlabel" x="%.1f" y="%d" text-anchor="middle">%s</text>`, x, chartH-5, time.Unix(t, 0).UTC().Format("15:04"))
	}
	if !hasData {
		fmt.Fprintf(&b, `<text class="nodata" x="%d" y="%d" text-anchor="middle">No data in this window</text>`,
			(chartW+chartLeft)/2, (chartH-chartBottom+chartTop)/2)
	}
	if c.Limit != nil {
		y := s.y(*c.Limit)
		fmt.Fprintf(&b, `<line class="limit" x1="%d" x2="%d" y1="%.1f" y2="%.1f"/><text class="limitlabel" x="%d" y="%.1f" text-anchor="end">limit %s %s</text>`,
			chartLeft, chartW-chartRight, y, y, chartW-chartRight-2, y-3, s.label(*c.Limit), esc(c.Unit))
	}
	for i, sr := range c.Series {
		d, dots := c.path(sr.Values, s)
		cls := sr.class(i)
		if d != "" {
			fmt.Fprintf(&b, `<path class="line %s" d="%s"><title>%s</title></path>`, cls, d, esc(sr.Label))
		}
		for _, p := range dots {
			fmt.Fprintf(&b, `<circle class="dot %s" cx="%.1f" cy="%.1f" r="2"/>`, cls, p[0], p[1])
		}
	}
	// Events: a line across the plot and a flag on top, with the message
	// as tooltip.
	from, to := c.span()
	for _, e := range c.Events {
		if e.Time < from || e.Time > to {
			continue
		}
		x := c.x(e.Time)
		fmt.Fprintf(&b, `<g class="event ev-%s"><title>%s %s: %s</title><line x1="%.1f" x2="%.1f" y1="%d" y2="%d"/><path d="M%.1f %dl4 -6h-8z"/></g>`,
			esc(eventClass(e.Kind)), time.Unix(e.Time, 0).UTC().Format("15:04:05"), esc(e.Kind), esc(e.Message),
			x, x, chartTop, chartH-chartBottom, x, chartTop+6)
	}
	fmt.Fprintf(&b, `<line class="axis" x1="%d" x2="%d" y1="%d" y2="%d"/></svg>`,
		chartLeft, chartW-chartRight, chartH-chartBottom, chartH-chartBottom)
	return template.HTML(b.String())
}

// eventClass keeps an event kind usable as a class name.
func eventClass(kind string) string {
	return strings.Map(func(r rune) rune {
		if r >= 'a' && r <= 'z' || r >= '0' && r <= '9' || r == '_' || r == '-' {
			return r
		}
		return '-'
	}, strings.ToLower(kind))
}

func esc(s string) string { return template.HTMLEscapeString(s) }

// sparkline renders values (oldest first) as a small line with the latest
// value as tooltip; nothing to draw gives a dash.
func sparkline(vals []float64, unit string) template.HTML {
	if len(vals) == 0 {
		return `<span class="muted">–</span>`
	}
	top := 0.0
	for _, v := range vals {
		top = math.Max(top, v)
	}
	if top <= 0 {
		top = 1
	}
	var b strings.Builder
	fmt.Fprintf(&b, `<svg class="spark" viewBox="0 0 %d %d" role="img" aria-label="%s"><title>%s %s now, peak %s</title><polyline points="`,
		sparkW, sparkH, "requests per second over the last hour", strconv.FormatFloat(vals[len(vals)-1], 'f', 1, 64), unit,
		strconv.FormatFloat(top, 'f', 1, 64))
	n := max(len(vals)-1, 1)
	for i, v := range vals {
		x := sparkPad + float64(i)/float64(n)*(sparkW-2*sparkPad)
		y := sparkPad + (1-v/top)*(sparkH-2*sparkPad)
		if i > 0 {
			b.WriteByte(' ')
		}
		fmt.Fprintf(&b, "%.1f,%.1f", x, y)
	}
	b.WriteString(`"/></svg>`)
	return template.HTML(b.String())
}
