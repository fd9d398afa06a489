package approval

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/agentjit/jit/pkg/events"
	"github.com/agentjit/jit/pkg/natstest"
	"github.com/agentjit/jit/services/approval/notify"
	"github.com/stretchr/testify/require"
)

// receiver is a local HTTP endpoint standing in for a webhook or Slack: it
// fails the first failures calls with 503, then records bodies.
type receiver struct {
	srv      *httptest.Server
	failures int32
	calls    atomic.Int32
	mu       sync.Mutex
	bodies   [][]byte
	headers  []http.Header
}

func newReceiver(t *testing.T, failures int32) *receiver {
	r := &receiver{failures: failures}
	r.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		b, _ := io.ReadAll(req.Body)
		if r.calls.Add(1) <= r.failures {
			http.Error(w, "busy", http.StatusServiceUnavailable)
			return
		}
		r.mu.Lock()
		r.bodies, r.headers = append(r.bodies, b), append(r.headers, req.Header.Clone())
		r.mu.Unlock()
	}))
	t.Cleanup(r.srv.Close)
	return r
}

func (r *receiver) got() ([][]byte, []http.Header) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.bodies, r.headers
}

func notifyConfig(t *testing.T, hook, chat, down string) string {
	t.Helper()
	yml := exampleConfig(t)
	out := strings.Replace(yml, "    approver_roles: [security-admin]\n",
		"    approver_roles: [security-admin]\n    notify: [hook, chat, down]\n", 1)
	require.NotEqual(t, yml, out)
	return out + `
console:
  url: https://jit.example.com/
notifiers:
  - {name: hook, type: webhook, url: "` + hook + `", secret: s3cret}
  - {name: chat, type: slack, url: "` + chat + `"}
  - {name: down, type: webhook, url: "` + down + `", secret: other}
`
}

func TestNotifications(t *testing.T) {
	hook, chat, down := newReceiver(t, 2), newReceiver(t, 0), newReceiver(t, 1000)
	h := harnessOn(t, natstest.Setup(t), notifyConfig(t, hook.srv.URL, chat.srv.URL, down.srv.URL))
	s := New(h.deps(), WithNotifyBackoff(func(int) time.Duration { return time.Millisecond }))
	require.NoError(t, s.Start(context.Background()))
	t.Cleanup(s.Stop)

	reqID := events.NewID("req")
	h.emitPolicy(pendingDecision(reqID, 10*time.Minute))
	h.waitPending(agentOptimizer, reqID)

	notes := func() map[string]events.Notification {
		out := map[string]events.Notification{}
		for _, e := range h.auditFor("jit.notification.>", reqID) {
			n := dataOf[events.Notification](t, e)
			out[n.Notifier] = n
		}
		return out
	}
	require.Eventually(t, func() bool { return len(notes()) == 3 }, waitFor, tick)
	ns := notes()
	require.Equal(t, events.NotificationDelivered, ns["hook"].Outcome)
	require.Equal(t, 3, ns["hook"].Attempts, "two failures, then delivered")
	require.Equal(t, events.NotificationDelivered, ns["chat"].Outcome)
	require.Equal(t, events.NotificationFailed, ns["down"].Outcome)
	require.Equal(t, notify.Attempts, ns["down"].Attempts)
	require.Equal(t, 503, ns["down"].HTTPStatus)
	require.Equal(t, int64(2), s.Counters().Delivered.Load())
	require.Equal(t, int64(1), s.Counters().Failed.Load())

	// The webhook: signed JSON with what an approver needs and console links.
	bodies, headers := hook.got()
	require.Len(t, bodies, 1)
	require.True(t, notify.VerifySignature("s3cret", headers[0].Get(notify.HeaderSignature), bodies[0], time.Now(), time.Minute))
	require.False(t, notify.VerifySignature("wrong", headers[0].Get(notify.HeaderSignature), bodies[0], time.Now(), time.Minute))
	require.Equal(t, reqID+"/hook", headers[0].Get(notify.HeaderDelivery))
	var p notify.WebhookPayload
	require.NoError(t, json.Unmarshal(bodies[0], &p))
	require.Equal(t, reqID, p.RequestID)
	require.Equal(t, agentOptimizer, p.Agent)
	require.Equal(t, []string{"integrations:write"}, p.Permissions)
	require.Equal(t, "10m0s", p.Duration)
	require.Equal(t, "reprice the catalogue", p.Reason)
	require.Equal(t, 55, p.Risk.Score)
	require.Equal(t, "https://jit.example.com/console/requests/"+reqID+"?action=approve", p.ApproveURL)
	require.Equal(t, "https://jit.example.com/console/requests/"+reqID+"?action=deny", p.DenyURL)

	// Slack: blocks with agent, permissions, duration, reason, risk and links.
	bodies, _ = chat.got()
	require.Len(t, bodies, 1)
	var sl struct {
		Text   string           `json:"text"`
		Blocks []map[string]any `json:"blocks"`
	}
	require.NoError(t, json.Unmarshal(bodies[0], &sl))
	all := string(bodies[0])
	for _, want := range []string{agentOptimizer, "integrations:write", "10m0s", "reprice the catalogue", "*Risk*\\n55", p.ApproveURL, p.DenyURL} {
		require.Contains(t, all, want)
	}
	require.Equal(t, "actions", sl.Blocks[len(sl.Blocks)-1]["type"])

	// The request waits regardless of failed notifications.
	require.Len(t, h.listPending("dev-alice").Pending, 1)
}

// A notification that finds the queue full is dropped, counted and audited
// as failed; the request still waits.
func TestDroppedNotificationIsAudited(t *testing.T) {
	release := make(chan struct{})
	slow := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-release:
		case <-r.Context().Done():
		}
	}))
	t.Cleanup(slow.Close)
	t.Cleanup(func() { close(release) })
	h := harnessOn(t, natstest.Setup(t), notifyConfig(t, slow.URL, slow.URL, slow.URL))
	s := New(h.deps())
	// No queue: a job is taken only by an idle worker (at most two), so at
	// least one of the three notifications of the request is dropped.
	s.notifier.SetQueue(0)
	require.NoError(t, s.Start(context.Background()))
	t.Cleanup(s.Stop)

	reqID := events.NewID("req")
	h.emitPolicy(pendingDecision(reqID, 10*time.Minute))
	h.waitPending(agentOptimizer, reqID)
	dropped := func() []events.Notification {
		var out []events.Notification
		for _, e := range h.auditFor("jit.notification.>", reqID) {
			if n := dataOf[events.Notification](t, e); strings.HasPrefix(n.Error, "dropped") {
				out = append(out, n)
			}
		}
		return out
	}
	require.Eventually(t, func() bool {
		n := s.Counters().Dropped.Load()
		return n >= 1 && int64(len(dropped())) == n
	}, waitFor, tick)
	n := dropped()[0]
	require.Equal(t, events.NotificationFailed, n.Outcome)
	require.Zero(t, n.Attempts)
	require.Len(t, h.listPending("dev-alice").Pending, 1, "the request waits regardless")
}
