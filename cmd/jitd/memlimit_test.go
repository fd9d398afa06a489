package main

import (
	"testing"

	"github.com/stretchr/testify/require"
)

func TestParseSize(t *testing.T) {
	for in, want := range map[string]int64{
		"256MiB":  256 << 20,
		"1GiB":    1 << 30,
		"1.5GiB":  3 << 29,
		"512KiB":  512 << 10,
		"1000000": 1_000_000,
		"4096B":   4096,
		"off":     -1,
		"0":       -1,
	} {
		got, err := parseSize(in)
		require.NoError(t, err, in)
		require.Equal(t, want, got, in)
	}
	for _, in := range []string{"", "256MB", "-1MiB", "lots", "1e30TiB", "MiB"} {
		_, err := parseSize(in)
		require.Error(t, err, in)
	}
}
