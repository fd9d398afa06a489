package e2e

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/agentjit/jit/cmd/internal/contract"
	"github.com/agentjit/jit/pkg/broker"
	"github.com/nats-io/nats.go"
	"github.com/stretchr/testify/require"
)

var (
	contractOnce sync.Once
	theContract  *contract.Contract
	contractErr  error
)

func loadContract(t *testing.T) *contract.Contract {
	t.Helper()
	contractOnce.Do(func() { theContract, contractErr = contract.Load("../../api/schemas") })
	require.NoError(t, contractErr)
	return theContract
}

// checkContract holds the system at url to its published contract: when
// the test ends (before the broker stops) it validates every event stored
// on the audit stream against api/schemas; an event type without a schema
// fails the test. A broker that is gone by then (a test that restarted jitd
// elsewhere) is skipped: the restarted one's check reads the same stream.
//
// jitapi calls are not tapped on the wire: a subscriber on jitapi.> would
// answer for absent services (no "no responders" any more) and change what
// clients see. TestAPIContract makes real calls of every endpoint instead.
func checkContract(t *testing.T, url string) {
	t.Helper()
	c := loadContract(t)
	// The stream is read as the administrator of the deployment behind url.
	admin := adminOptions(t, url)
	t.Cleanup(func() {
		nc, err := nats.Connect(url, append(admin, nats.Name("contract-check"), nats.Timeout(2*time.Second))...)
		if err != nil {
			t.Logf("contract: broker at %s is gone; its stream is checked where it was restarted", url)
			return
		}
		defer nc.Close()
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		stored := 0
		err = broker.ReadDirect(ctx, nc, broker.AuditStream, broker.DirectRead{}, func(m broker.StoredMsg) error {
			stored++
			if err := c.ValidateEvent(m.Header, m.Data); err != nil {
				t.Errorf("contract: event seq %d on %s: %v\n%s", m.Seq, m.Subject, err, m.Data)
			}
			return nil
		})
		if err != nil {
			t.Errorf("contract: read the stream: %v", err)
		}
		t.Logf("contract: %d events valid", stored)
	})
}
