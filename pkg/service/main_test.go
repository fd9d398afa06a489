package service

import (
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

func TestParseAge(t *testing.T) {
	for in, want := range map[string]time.Duration{
		"":      0,
		"90d":   90 * 24 * time.Hour,
		" 7d ":  7 * 24 * time.Hour,
		"2160h": 2160 * time.Hour,
		"90m":   90 * time.Minute,
	} {
		got, err := ParseAge(in)
		require.NoError(t, err, in)
		require.Equal(t, want, got, in)
	}
	for _, in := range []string{"d", "-1d", "0d", "ninety days", "-5h", "0s", "99999d"} {
		_, err := ParseAge(in)
		require.Error(t, err, in)
	}
}
