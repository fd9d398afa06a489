package broker

import (
	"testing"
	"time"
)

// SetDurablePoll makes kept durables started from now on read their state
// every d, until the test ends.
func SetDurablePoll(t testing.TB, d time.Duration) {
	old := durablePoll.Swap(int64(d))
	t.Cleanup(func() { durablePoll.Store(old) })
}

// Floor is the ack floor the consumer last read from the broker.
func (c *Consumer) Floor() uint64 { return c.d.floor.Load() }
