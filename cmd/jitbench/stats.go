package main

import (
	"math"
	"slices"
	"time"
)

// dist is a sample of durations.
type dist []time.Duration

// pct is the p-th percentile (0 < p ≤ 100, nearest rank) in milliseconds;
// NaN for an empty sample.
func (d dist) pct(p float64) float64 {
	if len(d) == 0 {
		return math.NaN()
	}
	s := slices.Clone(d)
	slices.Sort(s)
	i := int(math.Ceil(p/100*float64(len(s)))) - 1
	i = max(0, min(i, len(s)-1))
	return ms(s[i])
}

func (d dist) max() float64 {
	if len(d) == 0 {
		return math.NaN()
	}
	return ms(slices.Max(d))
}

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

// round keeps three decimals (µs for milliseconds).
func round(f float64) float64 {
	if math.IsNaN(f) || math.IsInf(f, 0) {
		return f
	}
	return math.Round(f*1000) / 1000
}
