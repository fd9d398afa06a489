package revoker

import (
	"testing"

	"github.com/stretchr/testify/require"
)

func TestLeaseIndex(t *testing.T) {
	var x leaseIndex
	x.set("a", "a.g2", true)
	_, ok := x.keys("a")
	require.False(t, ok, "not ready before the whole ledger was seen")

	x.set("a", "a.g1", true)
	x.set("b", "b.g3", true)
	x.markReady()
	keys, ok := x.keys("a")
	require.True(t, ok)
	require.Equal(t, []string{"a.g1", "a.g2"}, keys, "sorted")

	x.set("a", "a.g2", false) // revoking or revoked
	x.set("b", "b.g3", false)
	keys, _ = x.keys("a")
	require.Equal(t, []string{"a.g1"}, keys)
	keys, ok = x.keys("b")
	require.True(t, ok)
	require.Empty(t, keys)
	require.NotContains(t, x.agents, "b", "an agent without active leases is forgotten")

	x.reset()
	_, ok = x.keys("a")
	require.False(t, ok, "a replay starts unready")
}
