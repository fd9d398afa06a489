package service

import (
	"sync"
	"time"
)

// Approver tokens are bearer secrets, so every surface that takes them
// slows down guessing: a caller (a NATS principal, an HTTP client address)
// that fails authentication MaxAuthFailures times within AuthWindow is
// refused with 429 until the window ends, valid tokens included, so that a
// guesser learns nothing meanwhile. The lockout is audited once, when it
// starts.
const (
	MaxAuthFailures = 10
	AuthWindow      = time.Minute
	// maxTracked bounds the callers remembered at once; past it, a caller
	// not seen yet is not tracked (its failures still cost it a round trip
	// each and are audited one by one).
	maxTracked = 10_000
)

// Lockout counts failed authentications per caller key. It is safe for
// concurrent use.
type Lockout struct {
	now func() time.Time

	mu    sync.Mutex
	byKey map[string]*failures
}

type failures struct {
	start time.Time // of the window
	n     int
}

// NewLockout returns a Lockout on the clock now.
func NewLockout(now func() time.Time) *Lockout {
	return &Lockout{now: now, byKey: map[string]*failures{}}
}

// Blocked reports whether key is locked out, and for how much longer.
func (l *Lockout) Blocked(key string) (time.Duration, bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	f := l.byKey[key]
	if f == nil || f.n < MaxAuthFailures {
		return 0, false
	}
	left := f.start.Add(AuthWindow).Sub(l.now())
	if left <= 0 {
		delete(l.byKey, key)
		return 0, false
	}
	return left, true
}

// Fail records a failed authentication of key and reports whether it
// starts a lockout.
func (l *Lockout) Fail(key string) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	now := l.now()
	f := l.byKey[key]
	if f != nil && now.Sub(f.start) >= AuthWindow {
		f = nil
	}
	if f == nil {
		if len(l.byKey) >= maxTracked {
			l.pruneLocked(now)
			if len(l.byKey) >= maxTracked {
				return false
			}
		}
		f = &failures{start: now}
		l.byKey[key] = f
	}
	f.n++
	return f.n == MaxAuthFailures
}

// Succeed forgets key's failures.
func (l *Lockout) Succeed(key string) {
	l.mu.Lock()
	delete(l.byKey, key)
	l.mu.Unlock()
}

func (l *Lockout) pruneLocked(now time.Time) {
	for k, f := range l.byKey {
		if now.Sub(f.start) >= AuthWindow {
			delete(l.byKey, k)
		}
	}
}
