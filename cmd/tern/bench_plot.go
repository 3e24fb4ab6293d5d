package main

import (
	"errors"
	"fmt"
	"image/color"
	"math"
	"os"
	"path/filepath"
	"strings"

	"gonum.org/v1/plot"
	"gonum.org/v1/plot/plotter"
	"gonum.org/v1/plot/vg"
	"gonum.org/v1/plot/vg/draw"
	_ "gonum.org/v1/plot/vg/vgimg" // png
	_ "gonum.org/v1/plot/vg/vgsvg" // svg
)

// plotFormat returns the image format a plot file name asks for.
func plotFormat(path string) (string, error) {
	switch ext := strings.ToLower(strings.TrimPrefix(filepath.Ext(path), ".")); ext {
	case "svg", "png":
		return ext, nil
	default:
		return "", fmt.Errorf("unknown image format %q: want .svg or .png", ext)
	}
}

// plotReport draws the report to path: messages a second over time (out and in), and above
// it the latency percentile curve of each histogram the report holds, on a scale where
// each step right is a nine more (90%, 99%, 99.9%, ...).
func plotReport(r *benchReport, path string) error {
	format, err := plotFormat(path)
	if err != nil {
		return err
	}
	lat, err := latencyPlot(r)
	if err != nil {
		return err
	}
	thr, err := throughputPlot(r)
	if err != nil {
		return err
	}
	const w, h = 20 * vg.Centimeter, 24 * vg.Centimeter
	c, err := draw.NewFormattedCanvas(w, h, format)
	if err != nil {
		return err
	}
	plots := [][]*plot.Plot{{lat}, {thr}}
	canvases := plot.Align(plots, draw.Tiles{Rows: 2, Cols: 1, PadY: vg.Centimeter, PadX: vg.Centimeter,
		PadTop: vg.Centimeter / 2, PadBottom: vg.Centimeter / 2, PadLeft: vg.Centimeter / 2, PadRight: vg.Centimeter / 2},
		draw.New(c))
	lat.Draw(canvases[0][0])
	thr.Draw(canvases[1][0])
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	if _, err := c.WriteTo(f); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

// nines maps a percentile to the plot's x axis: -log10(1 - p/100), so 90% is 1, 99% is 2.
func nines(p float64) float64 { return -math.Log10(1 - p/100) }

func latencyPlot(r *benchReport) (*plot.Plot, error) {
	p := plot.New()
	p.Title.Text = fmt.Sprintf("tern bench %s: latency by percentile", r.Workload)
	p.X.Label.Text = "percentile"
	p.Y.Label.Text = "latency (ms)"
	p.X.Tick.Marker = plot.ConstantTicks([]plot.Tick{{Value: 0, Label: "0%"}, {Value: 1, Label: "90%"},
		{Value: 2, Label: "99%"}, {Value: 3, Label: "99.9%"}, {Value: 4, Label: "99.99%"}, {Value: 5, Label: "99.999%"}})
	p.Legend.Top = true
	p.Legend.Left = true
	var lines []any
	for _, name := range []string{"latency", "ack", "connect"} {
		h, err := r.hist(name)
		if err != nil {
			return nil, err
		}
		if h == nil || h.TotalCount() == 0 {
			continue
		}
		var pts plotter.XYs
		// Up to the percentile one sample stands for, at most 99.999%.
		top := min(nines(100*(1-1/float64(h.TotalCount()))), 5)
		for x := 0.0; x <= top+1e-9; x += 0.05 {
			q := 100 * (1 - math.Pow(10, -x))
			pts = append(pts, plotter.XY{X: x, Y: float64(h.ValueAtQuantile(q)) / 1000})
		}
		label := map[string]string{"latency": "end to end", "ack": "publish to ack", "connect": "connect"}[name]
		lines = append(lines, label, pts)
	}
	if len(lines) == 0 {
		return nil, errors.New("the report has no latency histogram")
	}
	if err := addLines(p, lines...); err != nil {
		return nil, err
	}
	return p, nil
}

func throughputPlot(r *benchReport) (*plot.Plot, error) {
	p := plot.New()
	p.Title.Text = "throughput"
	p.X.Label.Text = "time (s)"
	p.Y.Label.Text = "messages/s"
	p.Legend.Top = true
	var out, in plotter.XYs
	prev := 0.0
	for _, s := range r.Series {
		d := s.T - prev
		if d < 0.05 { // the last, partial interval may be a sliver
			continue
		}
		out = append(out, plotter.XY{X: s.T, Y: float64(s.Out) / d})
		in = append(in, plotter.XY{X: s.T, Y: float64(s.In) / d})
		prev = s.T
	}
	if len(out) == 0 {
		out = plotter.XYs{{}}
		in = plotter.XYs{{}}
	}
	if err := addLines(p, "out", out, "in", in); err != nil {
		return nil, err
	}
	return p, nil
}

// addLines adds named lines, each in a colour of its own.
func addLines(p *plot.Plot, vs ...any) error {
	for i := 0; i+1 < len(vs); i += 2 {
		l, err := plotter.NewLine(vs[i+1].(plotter.XYs))
		if err != nil {
			return err
		}
		l.Color = plotColors[(i/2)%len(plotColors)]
		l.Width = vg.Points(1.5)
		p.Add(l)
		p.Legend.Add(vs[i].(string), l)
	}
	p.Add(plotter.NewGrid())
	return nil
}

var plotColors = []color.Color{
	color.RGBA{R: 0x1f, G: 0x77, B: 0xb4, A: 0xff},
	color.RGBA{R: 0xd6, G: 0x27, B: 0x28, A: 0xff},
	color.RGBA{R: 0x2c, G: 0xa0, B: 0x2c, A: 0xff},
}
