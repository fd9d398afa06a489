package embedded

import (
	"errors"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/require"
)

// TestLockStoreIsExclusive: a store's lock is held by one holder at a time,
// a second is refused at once with ErrStoreInUse, and the lock is free
// again after Unlock.
func TestLockStoreIsExclusive(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "data", "jetstream")
	first, err := LockStore(dir)
	require.NoError(t, err, "the directory is made if missing")

	second, err := LockStore(dir)
	require.Nil(t, second)
	require.True(t, errors.Is(err, ErrStoreInUse), "%v", err)
	require.Contains(t, err.Error(), dir)

	first.Unlock()
	first.Unlock()
	again, err := LockStore(dir)
	require.NoError(t, err)
	again.Unlock()
}
