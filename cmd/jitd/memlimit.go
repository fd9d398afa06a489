package main

import (
	"fmt"
	"math"
	"runtime/debug"
	"strconv"
	"strings"
)

// parseSize reads a memory size in the syntax of Go's GOMEMLIMIT: a number
// of bytes with an optional unit B, KiB, MiB, GiB or TiB ("256MiB"). "0" and
// "off" mean no limit (-1).
func parseSize(s string) (int64, error) {
	s = strings.TrimSpace(s)
	if s == "off" || s == "0" {
		return -1, nil
	}
	units := []struct {
		suffix string
		mult   float64
	}{{"TiB", 1 << 40}, {"GiB", 1 << 30}, {"MiB", 1 << 20}, {"KiB", 1 << 10}, {"B", 1}}
	mult := 1.0
	for _, u := range units {
		if num, ok := strings.CutSuffix(s, u.suffix); ok {
			s, mult = num, u.mult
			break
		}
	}
	n, err := strconv.ParseFloat(s, 64)
	if err != nil || n <= 0 || math.IsInf(n, 0) || n*mult > math.MaxInt64 {
		return 0, fmt.Errorf("%q is not a memory size such as 256MiB or 1GiB (or off)", s)
	}
	return int64(n * mult), nil
}

// applyMemoryLimit sets the Go runtime's soft memory limit from the
// --memory-limit flag; an empty flag leaves Go's default (GOMEMLIMIT, if
// set). It returns the limit in force, -1 for none.
func applyMemoryLimit(flagValue string) (int64, error) {
	if flagValue == "" {
		cur := debug.SetMemoryLimit(-1)
		if cur == math.MaxInt64 {
			return -1, nil
		}
		return cur, nil
	}
	n, err := parseSize(flagValue)
	if err != nil {
		return 0, err
	}
	if n < 0 {
		debug.SetMemoryLimit(math.MaxInt64)
		return -1, nil
	}
	debug.SetMemoryLimit(n)
	return n, nil
}
