package server

// A small line plot for the soak graph, drawn with the standard library
// only: panels of series over a shared x axis, nice ticks, and labels in a
// 5x7 bitmap font.

import (
	"fmt"
	"image"
	"image/color"
	"image/png"
	"math"
	"os"
	"strings"
)

type plotSeries struct {
	ys    []float64
	color color.RGBA
}

// plotSpan is a horizontal segment (a median over part of the run).
type plotSpan struct {
	x0, x1, y float64
	color     color.RGBA
}

type plotPanel struct {
	title  string
	series []plotSeries
	spans  []plotSpan
}

type plotChart struct {
	title  string
	xlabel string
	xs     []float64
	vlines []float64 // dotted verticals (the thirds of the run)
	panels []plotPanel
}

var (
	plotWhite = color.RGBA{255, 255, 255, 255}
	plotBlack = color.RGBA{0, 0, 0, 255}
	plotGrid  = color.RGBA{225, 225, 225, 255}
	plotGray  = color.RGBA{120, 120, 120, 255}
	plotShade = color.RGBA{244, 244, 244, 255}
	plotBlue  = color.RGBA{31, 90, 180, 255}
	plotRed   = color.RGBA{200, 60, 40, 255}
	plotGreen = color.RGBA{20, 140, 60, 255}
)

const (
	plotW, plotH       = 1000, 720
	plotLeft, plotRght = 100, 30
	plotTop, plotGap   = 50, 70
	plotBottom         = 70 // x tick labels and the x axis label
	plotScale          = 2  // font pixels per bitmap pixel
)

// writePNG draws the chart into path.
func (ch *plotChart) writePNG(path string) error {
	img := image.NewRGBA(image.Rect(0, 0, plotW, plotH))
	plotFill(img, img.Bounds(), plotWhite)
	plotText(img, (plotW-plotTextWidth(ch.title))/2, 14, ch.title, plotBlack)

	xmin, xmax := 0.0, 1.0
	if len(ch.xs) > 0 {
		xmax = ch.xs[len(ch.xs)-1]
	}
	if xmax <= xmin {
		xmax = xmin + 1
	}
	xstep := plotNiceStep((xmax - xmin) / 8)
	panelH := (plotH - plotTop - plotBottom - plotGap*(len(ch.panels)-1)) / len(ch.panels)
	for pi, p := range ch.panels {
		top := plotTop + pi*(panelH+plotGap) + 24
		area := image.Rect(plotLeft, top, plotW-plotRght, top+panelH-24)
		plotText(img, plotLeft, top-22, p.title, plotBlack)

		ymax := 0.0
		for _, s := range p.series {
			for _, y := range s.ys {
				ymax = math.Max(ymax, y)
			}
		}
		ystep := plotNiceStep(math.Max(ymax, 1) * 1.15 / 5)
		ytop := math.Ceil(math.Max(ymax, 1)*1.15/ystep) * ystep
		px := func(x float64) int {
			return area.Min.X + int(math.Round((x-xmin)/(xmax-xmin)*float64(area.Dx()-1)))
		}
		py := func(y float64) int {
			return area.Max.Y - 1 - int(math.Round(y/ytop*float64(area.Dy()-1)))
		}
		// the warm-up third, shaded
		if len(ch.vlines) > 0 {
			plotFill(img, image.Rect(area.Min.X, area.Min.Y, px(ch.vlines[0]), area.Max.Y), plotShade)
		}
		for y := 0.0; y <= ytop+ystep/2; y += ystep {
			plotHLine(img, area.Min.X, area.Max.X, py(y), plotGrid)
			label := plotNum(y)
			plotText(img, area.Min.X-8-plotTextWidth(label), py(y)-7, label, plotBlack)
		}
		for x := math.Ceil(xmin/xstep) * xstep; x <= xmax+xstep/1e6; x += xstep {
			plotVLine(img, px(x), area.Min.Y, area.Max.Y, plotGrid)
			label := plotNum(x)
			plotText(img, px(x)-plotTextWidth(label)/2, area.Max.Y+6, label, plotBlack)
		}
		for _, v := range ch.vlines {
			for y := area.Min.Y; y < area.Max.Y; y += 6 {
				plotVLine(img, px(v), y, min(y+3, area.Max.Y), plotGray)
			}
		}
		for _, s := range p.spans {
			for x := px(s.x0); x < px(s.x1); x += 10 {
				plotLine(img, x, py(s.y), min(x+6, px(s.x1)), py(s.y), s.color)
			}
		}
		for _, s := range p.series {
			for i := 1; i < len(s.ys) && i < len(ch.xs); i++ {
				plotLine(img, px(ch.xs[i-1]), py(s.ys[i-1]), px(ch.xs[i]), py(s.ys[i]), s.color)
			}
		}
		// axes
		plotHLine(img, area.Min.X, area.Max.X, area.Max.Y-1, plotBlack)
		plotVLine(img, area.Min.X, area.Min.Y, area.Max.Y, plotBlack)
	}
	plotText(img, (plotW-plotTextWidth(ch.xlabel))/2, plotH-24, ch.xlabel, plotBlack)

	f, err := os.Create(path)
	if err != nil {
		return err
	}
	if err := png.Encode(f, img); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

// plotNiceStep rounds raw up to 1, 2 or 5 times a power of ten.
func plotNiceStep(raw float64) float64 {
	if raw <= 0 {
		return 1
	}
	p := math.Pow(10, math.Floor(math.Log10(raw)))
	for _, m := range []float64{1, 2, 5, 10} {
		if m*p >= raw {
			return m * p
		}
	}
	return 10 * p
}

func plotNum(v float64) string {
	s := fmt.Sprintf("%.2f", v)
	s = strings.TrimRight(strings.TrimRight(s, "0"), ".")
	if s == "-0" {
		s = "0"
	}
	return s
}

func plotFill(img *image.RGBA, r image.Rectangle, c color.RGBA) {
	r = r.Intersect(img.Bounds())
	for y := r.Min.Y; y < r.Max.Y; y++ {
		for x := r.Min.X; x < r.Max.X; x++ {
			img.SetRGBA(x, y, c)
		}
	}
}

func plotHLine(img *image.RGBA, x0, x1, y int, c color.RGBA) {
	for x := x0; x < x1; x++ {
		img.SetRGBA(x, y, c)
	}
}

func plotVLine(img *image.RGBA, x, y0, y1 int, c color.RGBA) {
	for y := y0; y < y1; y++ {
		img.SetRGBA(x, y, c)
	}
}

// plotLine draws a line two pixels wide (Bresenham).
func plotLine(img *image.RGBA, x0, y0, x1, y1 int, c color.RGBA) {
	dx, dy := plotAbs(x1-x0), -plotAbs(y1-y0)
	sx, sy := plotSign(x1-x0), plotSign(y1-y0)
	e := dx + dy
	for {
		img.SetRGBA(x0, y0, c)
		img.SetRGBA(x0, y0+1, c)
		img.SetRGBA(x0+1, y0, c)
		if x0 == x1 && y0 == y1 {
			return
		}
		if e2 := 2 * e; e2 >= dy {
			e += dy
			x0 += sx
		} else {
			e += dx
			y0 += sy
		}
	}
}

func plotAbs(v int) int  { return max(v, -v) }
func plotSign(v int) int { return min(max(v, -1), 1) }

func plotTextWidth(s string) int { return len(s) * 6 * plotScale }

// plotText writes s (upper-cased) with its top left corner at x, y.
func plotText(img *image.RGBA, x, y int, s string, c color.RGBA) {
	for _, r := range strings.ToUpper(s) {
		g, ok := plotFont[r]
		if !ok {
			g = plotFont['?']
		}
		for row, bits := range g {
			for col, b := range bits {
				if b == '#' {
					plotFill(img, image.Rect(x+col*plotScale, y+row*plotScale, x+(col+1)*plotScale, y+(row+1)*plotScale), c)
				}
			}
		}
		x += 6 * plotScale
	}
}

// plotFont is a 5x7 bitmap font of what the labels use.
var plotFont = map[rune][7]string{
	' ': {".....", ".....", ".....", ".....", ".....", ".....", "....."},
	'A': {".###.", "#...#", "#...#", "#####", "#...#", "#...#", "#...#"},
	'B': {"####.", "#...#", "#...#", "####.", "#...#", "#...#", "####."},
	'C': {".###.", "#...#", "#....", "#....", "#....", "#...#", ".###."},
	'D': {"####.", "#...#", "#...#", "#...#", "#...#", "#...#", "####."},
	'E': {"#####", "#....", "#....", "####.", "#....", "#....", "#####"},
	'F': {"#####", "#....", "#....", "####.", "#....", "#....", "#...."},
	'G': {".###.", "#...#", "#....", "#.###", "#...#", "#...#", ".####"},
	'H': {"#...#", "#...#", "#...#", "#####", "#...#", "#...#", "#...#"},
	'I': {".###.", "..#..", "..#..", "..#..", "..#..", "..#..", ".###."},
	'J': {"..###", "...#.", "...#.", "...#.", "...#.", "#..#.", ".##.."},
	'K': {"#...#", "#..#.", "#.#..", "##...", "#.#..", "#..#.", "#...#"},
	'L': {"#....", "#....", "#....", "#....", "#....", "#....", "#####"},
	'M': {"#...#", "##.##", "#.#.#", "#.#.#", "#...#", "#...#", "#...#"},
	'N': {"#...#", "#...#", "##..#", "#.#.#", "#..##", "#...#", "#...#"},
	'O': {".###.", "#...#", "#...#", "#...#", "#...#", "#...#", ".###."},
	'P': {"####.", "#...#", "#...#", "####.", "#....", "#....", "#...."},
	'Q': {".###.", "#...#", "#...#", "#...#", "#.#.#", "#..#.", ".##.#"},
	'R': {"####.", "#...#", "#...#", "####.", "#.#..", "#..#.", "#...#"},
	'S': {".####", "#....", "#....", ".###.", "....#", "....#", "####."},
	'T': {"#####", "..#..", "..#..", "..#..", "..#..", "..#..", "..#.."},
	'U': {"#...#", "#...#", "#...#", "#...#", "#...#", "#...#", ".###."},
	'V': {"#...#", "#...#", "#...#", "#...#", "#...#", ".#.#.", "..#.."},
	'W': {"#...#", "#...#", "#...#", "#.#.#", "#.#.#", "#.#.#", ".#.#."},
	'X': {"#...#", "#...#", ".#.#.", "..#..", ".#.#.", "#...#", "#...#"},
	'Y': {"#...#", "#...#", ".#.#.", "..#..", "..#..", "..#..", "..#.."},
	'Z': {"#####", "....#", "...#.", "..#..", ".#...", "#....", "#####"},
	'0': {".###.", "#...#", "#..##", "#.#.#", "##..#", "#...#", ".###."},
	'1': {"..#..", ".##..", "..#..", "..#..", "..#..", "..#..", ".###."},
	'2': {".###.", "#...#", "....#", "...#.", "..#..", ".#...", "#####"},
	'3': {"#####", "...#.", "..#..", "...#.", "....#", "#...#", ".###."},
	'4': {"...#.", "..##.", ".#.#.", "#..#.", "#####", "...#.", "...#."},
	'5': {"#####", "#....", "####.", "....#", "....#", "#...#", ".###."},
	'6': {"..##.", ".#...", "#....", "####.", "#...#", "#...#", ".###."},
	'7': {"#####", "....#", "...#.", "..#..", ".#...", ".#...", ".#..."},
	'8': {".###.", "#...#", "#...#", ".###.", "#...#", "#...#", ".###."},
	'9': {".###.", "#...#", "#...#", ".####", "....#", "...#.", ".##.."},
	'.': {".....", ".....", ".....", ".....", ".....", ".##..", ".##.."},
	',': {".....", ".....", ".....", ".....", ".##..", "..#..", ".#..."},
	':': {".....", ".##..", ".##..", ".....", ".##..", ".##..", "....."},
	'-': {".....", ".....", ".....", "#####", ".....", ".....", "....."},
	'+': {".....", "..#..", "..#..", "#####", "..#..", "..#..", "....."},
	'=': {".....", ".....", "#####", ".....", "#####", ".....", "....."},
	'(': {"...#.", "..#..", ".#...", ".#...", ".#...", "..#..", "...#."},
	')': {".#...", "..#..", "...#.", "...#.", "...#.", "..#..", ".#..."},
	'/': {".....", "....#", "...#.", "..#..", ".#...", "#....", "....."},
	'%': {"##...", "##..#", "...#.", "..#..", ".#...", "#..##", "...##"},
	'?': {".###.", "#...#", "....#", "...#.", "..#..", ".....", "..#.."},
	'*': {".....", "#.#.#", ".###.", "#####", ".###.", "#.#.#", "....."},
	'~': {".....", ".....", ".#...", "#.#.#", "...#.", ".....", "....."},
}
