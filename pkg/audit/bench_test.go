package audit_test

import (
	"crypto/ed25519"
	"testing"
	"time"

	"github.com/agentjit/jit/pkg/audit"
	"github.com/agentjit/jit/pkg/events"
)

// BenchmarkChainAppend is the signer's cost per stream message: hash the
// message, extend the chain, and its share of a signed checkpoint of
// events.MaxCheckpointEvents messages.
func BenchmarkChainAppend(b *testing.B) {
	recs := trail(b, seedKey, 1, 1)
	r := recs[0]
	c := audit.NewChain("JIT_AUDIT", 1, audit.Hash{})
	now := time.Now()
	b.ReportAllocs()
	b.ResetTimer()
	for i := range b.N {
		if err := c.Add(uint64(i+1), r.Hash(), now, false); err != nil {
			b.Fatal(err)
		}
		if c.Pending() == events.MaxCheckpointEvents {
			cp, n := c.Peek()
			audit.Sign(&cp, seedKey)
			c.Commit(n)
		}
	}
}

// BenchmarkVerify is verify's cost per stream message, over a trail of
// 10,000 events with a checkpoint every 1,024 messages.
func BenchmarkVerify(b *testing.B) {
	recs := trail(b, seedKey, 10_000, events.MaxCheckpointEvents)
	keys := audit.NewKeys(seedKey.Public().(ed25519.PublicKey))
	b.ReportAllocs()
	b.ResetTimer()
	for range b.N {
		v := audit.NewVerifier(keys)
		for _, r := range recs {
			v.Add(r)
		}
		if !v.Result().OK() {
			b.Fatal("not whole")
		}
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*len(recs)), "ns/msg")
}
