package web

import (
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/agentjit/jit/pkg/events"
	"github.com/agentjit/jit/pkg/metrics"
	"github.com/agentjit/jit/pkg/service"
	"github.com/stretchr/testify/require"
)

// TestConsoleShowsFailingRevocations: a revocation the revokers report as
// failing (on the services API, as jitctl status reads it) appears on the
// operator's page within seconds, with its grant, agent, reason, since when
// and last error, announced as a live update without a page load; once the
// revocation succeeds it goes, live too.
func TestConsoleShowsFailingRevocations(t *testing.T) {
	h := newHarness(t)
	_, srv := h.startHTTP()
	// A revoker's status endpoint (service.StatusService, as the auditor
	// runs one) reporting what the test sets: the revocation that cannot
	// complete is the revoker's own test (TestFailingRevocationShows); the
	// whole path with a real revoker, jitd's (cmd/internal/allinone).
	var mu sync.Mutex
	var report []metrics.FailingRevocation
	set := func(fs ...metrics.FailingRevocation) {
		mu.Lock()
		report = fs
		mu.Unlock()
	}
	t.Cleanup(metrics.ProvideFailing(func() []metrics.FailingRevocation {
		mu.Lock()
		defer mu.Unlock()
		return slices.Clone(report)
	}))
	rv, err := service.StatusService(h.Deps(), "revoker", "stands in for the revoker's status")
	require.NoError(t, err)
	t.Cleanup(func() { _ = rv.Stop() })

	c := newConsoleClient(t, srv)
	c.signIn("dev-carol")
	_, page := c.get("/console/")
	require.NotContains(t, page, `id="failing"`, "nothing fails: no section")
	changed := c.liveUpdates()

	since := time.Now().Add(-3 * time.Second).UTC().Truncate(time.Second)
	set(metrics.FailingRevocation{GrantID: "grt_stuck", Agent: "market-intel", Reason: events.RevokedExpired, Attempts: 3,
		Since: since, LastError: "lease market-intel.grt_stuck is in an unknown state \"stuck\"", LastTry: time.Now()})
	changed("the failing revocation is announced")
	_, live := c.get("/console/live")
	require.Contains(t, live, `<h2 id="failing-h">Revocations that keep failing <span class="count">1</span></h2>`)
	require.Regexp(t, `<tr class="failing-revocation" data-grant="grt_stuck"><td data-label="Agent"><strong>market-intel</strong></td>`+
		`<td data-label="Grant"><code>grt_stuck</code></td><td data-label="Reason">expired</td>`+
		`<td data-label="Failing since"><time datetime="`+since.Format(time.RFC3339)+`">[^<]+</time></td>`+
		`<td data-label="Last error" class="wrap">lease market-intel.grt_stuck is in an unknown state &#34;stuck&#34;</td></tr>`, live)

	set()
	changed("the revocation that succeeded is announced")
	_, live = c.get("/console/live")
	require.NotContains(t, live, "grt_stuck")
	require.NotContains(t, live, `id="failing"`)
}
