package service

import (
	"fmt"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

func TestLockout(t *testing.T) {
	now := time.Unix(1_000_000, 0)
	l := NewLockout(func() time.Time { return now })
	for i := 1; i < MaxAuthFailures; i++ {
		require.False(t, l.Fail("10.0.0.1"), "failure %d", i)
		_, blocked := l.Blocked("10.0.0.1")
		require.False(t, blocked)
	}
	require.True(t, l.Fail("10.0.0.1"), "the tenth failure starts the lockout")
	left, blocked := l.Blocked("10.0.0.1")
	require.True(t, blocked)
	require.Equal(t, AuthWindow, left)
	_, blocked = l.Blocked("10.0.0.2")
	require.False(t, blocked, "other callers are not affected")

	now = now.Add(AuthWindow)
	_, blocked = l.Blocked("10.0.0.1")
	require.False(t, blocked, "the lockout ends with its window")
	require.False(t, l.Fail("10.0.0.1"), "a new window starts from one")

	// Failures spread over more than a window never lock out.
	for i := range 3 * MaxAuthFailures {
		now = now.Add(AuthWindow / (MaxAuthFailures - 2))
		require.False(t, l.Fail("10.0.0.3"), "failure %d", i)
	}

	// A success forgets the failures.
	for range MaxAuthFailures - 1 {
		l.Fail("10.0.0.4")
	}
	l.Succeed("10.0.0.4")
	require.False(t, l.Fail("10.0.0.4"))

	// Memory is bounded: past maxTracked addresses, expired ones are
	// dropped, and new ones are not tracked while all are current.
	for i := range maxTracked {
		l.Fail(fmt.Sprintf("fd00::%x", i))
	}
	require.LessOrEqual(t, len(l.byKey), maxTracked)
	require.False(t, l.Fail("10.9.9.9"))
	require.NotContains(t, l.byKey, "10.9.9.9")
	now = now.Add(AuthWindow)
	l.Fail("10.9.9.9")
	require.Contains(t, l.byKey, "10.9.9.9", "expired entries make room")
	require.Less(t, len(l.byKey), 100)
}
