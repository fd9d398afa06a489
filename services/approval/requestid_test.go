package approval

import (
	"encoding/json"
	"testing"
	"time"

	"github.com/agentjit/jit/pkg/broker"
	"github.com/agentjit/jit/pkg/events"
)

// TestRefusalsNameTheirRequest: a refusal that comes before the caller is
// known (no token, a wrong one) or before the body is decoded still names
// the request the call was about, in the jit.rejected data and its
// requestid extension. (The console's and the HTTP API's: package web.)
func TestRefusalsNameTheirRequest(t *testing.T) {
	h := newHarness(t)
	h.start()
	reqID := events.NewID("req")
	h.emitPolicy(pendingDecision(reqID, 10*time.Minute))
	h.waitPending(agentOptimizer, reqID)

	requireAbout := h.RequireLastRejectionAbout

	// NATS API.
	err := h.call(broker.APIApprove, "", broker.ApproveInput{RequestID: reqID}, &json.RawMessage{})
	h.requireRefused(err, 401, events.CodeUnauthenticated)
	requireAbout("approve without token", reqID, "")
	err = h.call(broker.APIDeny, "dev-mallory", broker.ApproveInput{RequestID: reqID, Comment: "no"}, &json.RawMessage{})
	h.requireRefused(err, 401, events.CodeUnauthenticated)
	requireAbout("deny with a wrong token", reqID, "")
	err = h.call(broker.APIApprove, "dev-alice", map[string]string{"request_id": reqID, "approver": "alice"}, &json.RawMessage{})
	h.requireRefused(err, 400, events.CodeMalformed)
	requireAbout("a body with an unknown field", reqID, "")
}
