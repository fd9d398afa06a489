package audit

import (
	"fmt"
	"time"

	"github.com/agentjit/jit/pkg/events"
)

// Chain is the signer's running state over one stream: the chain value
// after every message taken so far, and the messages taken since the last
// checkpoint. It is not safe for concurrent use.
type Chain struct {
	stream string
	next   uint64 // the sequence expected next
	// The messages not yet in a checkpoint: from sequence start, after the
	// chain value startChain.
	start      uint64
	startChain Hash
	hashes     []Hash
	seqs       []uint64
	times      []time.Time
	events     []bool // false for a checkpoint message
	skipped    []events.SeqRange
}

// NewChain starts a chain of stream at sequence next, after the chain value
// prev (the zero Hash at the start of a stream, or a checkpoint's chain
// with next = its last_seq+1).
func NewChain(stream string, next uint64, prev Hash) *Chain {
	next = max(next, 1)
	return &Chain{stream: stream, next: next, start: next, startChain: prev}
}

// Next is the sequence the chain expects next.
func (c *Chain) Next() uint64 { return c.next }

// Add takes the message with sequence seq, hash h and broker time t.
// Sequences between Next and seq are recorded as skipped: the caller looked
// for them on the stream and they were not there. isCheckpoint marks the
// signer's own checkpoints, which alone never call for a new checkpoint.
// A sequence below Next is an error.
func (c *Chain) Add(seq uint64, h Hash, t time.Time, isCheckpoint bool) error {
	if seq < c.next {
		return fmt.Errorf("seq %d is behind the chain, which expects %d", seq, c.next)
	}
	if seq > c.next {
		c.skipped = append(c.skipped, events.SeqRange{First: c.next, Last: seq - 1})
	}
	c.hashes = append(c.hashes, h)
	c.seqs = append(c.seqs, seq)
	c.times = append(c.times, t)
	c.events = append(c.events, !isCheckpoint)
	c.next = seq + 1
	return nil
}

// Pending is the number of messages taken since the last checkpoint.
func (c *Chain) Pending() int { return len(c.hashes) }

// NeedsCheckpoint reports whether the messages since the last checkpoint
// include anything besides checkpoints: an event, or a skipped sequence.
func (c *Chain) NeedsCheckpoint() bool {
	if len(c.skipped) > 0 && len(c.hashes) > 0 {
		return true
	}
	for _, e := range c.events {
		if e {
			return true
		}
	}
	return false
}

// Peek returns the unsigned checkpoint of the oldest pending messages, at
// most events.MaxCheckpointEvents of them, and how many it covers (0 when
// nothing is pending). Commit(n) then drops them from the pending ones.
func (c *Chain) Peek() (events.Checkpoint, int) {
	n := min(len(c.hashes), events.MaxCheckpointEvents)
	if n == 0 {
		return events.Checkpoint{}, 0
	}
	last := c.seqs[n-1]
	var skipped []events.SeqRange
	for _, r := range c.skipped {
		if r.First <= last {
			skipped = append(skipped, r)
		}
	}
	cp := NewCheckpoint(c.stream, c.start, last, skipped, c.startChain, c.hashes[:n], c.times[n-1])
	return cp, n
}

// Commit drops the n oldest pending messages, now in a stored checkpoint.
func (c *Chain) Commit(n int) {
	if n <= 0 || n > len(c.hashes) {
		return
	}
	last := c.seqs[n-1]
	c.startChain = Fold(c.startChain, c.hashes[:n])
	c.start = last + 1
	c.hashes, c.seqs, c.times, c.events = c.hashes[n:], c.seqs[n:], c.times[n:], c.events[n:]
	var rest []events.SeqRange
	for _, r := range c.skipped {
		if r.First > last {
			rest = append(rest, r)
		}
	}
	c.skipped = rest
}
