package embedded

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"syscall"
)

// ErrStoreInUse is returned by LockStore when another holder (a running
// jitd, or a jitctl that reads the store) has the store's lock.
var ErrStoreInUse = errors.New("the JetStream store is in use")

// lockFile is the lock's file in a store directory, beside the server's
// own "jetstream" directory, which the server never scans.
const lockFile = "jit.lock"

// StoreLock is an exclusive hold on a JetStream store directory. NATS
// servers do not lock their store: two on the same directory corrupt it,
// so whoever opens a store through this package takes the lock first.
type StoreLock struct{ f *os.File }

// LockStore takes the exclusive lock of the store directory dir (made if
// missing) without waiting: it returns an error wrapping ErrStoreInUse,
// naming dir, when another process, or another holder in this one, has it.
// The lock is the kernel's (flock), so a process that dies, even by
// SIGKILL, leaves none behind.
func LockStore(dir string) (*StoreLock, error) {
	if err := os.MkdirAll(dir, 0o750); err != nil {
		return nil, fmt.Errorf("store %s: %w", dir, err)
	}
	f, err := os.OpenFile(filepath.Join(dir, lockFile), os.O_CREATE|os.O_RDWR, 0o600)
	if err != nil {
		return nil, fmt.Errorf("lock store %s: %w", dir, err)
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		_ = f.Close()
		if errors.Is(err, syscall.EWOULDBLOCK) {
			return nil, fmt.Errorf("store %s: %w (a jitd runs on it?)", dir, ErrStoreInUse)
		}
		return nil, fmt.Errorf("lock store %s: %w", dir, err)
	}
	return &StoreLock{f: f}, nil
}

// Unlock releases the lock. It is safe to call more than once and on nil.
func (l *StoreLock) Unlock() {
	if l == nil || l.f == nil {
		return
	}
	// Closing the descriptor releases the flock.
	_ = l.f.Close()
	l.f = nil
}
