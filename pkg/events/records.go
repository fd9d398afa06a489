package events

import (
	"strconv"
	"time"
)

// The domain records the services keep in KV buckets beside the events,
// and the ids of events a retry may publish again.

// Lease states in the leases bucket.
const (
	LeaseActive   = "active"
	LeaseRevoking = "revoking" // the revocation is decided; its event may not be on the stream yet
	LeaseRevoked  = "revoked"  // jit.revoked is on the stream: nothing more happens to this grant
)

// Lease is the ledger record of one grant, key "<agent>.<grant_id>" in the
// leases bucket. The approval service creates it (state active) before the
// grant; the revoker alone moves it to revoking and revoked. It outlives the
// grant's TTL, which is what makes exactly one jit.revoked per grant possible
// after any crash.
type Lease struct {
	Grant Grant  `json:"grant"`
	State string `json:"state"`
	// Revocation is set from state revoking on: the first reason wins, and a
	// republished event carries the same data.
	Revocation *Revocation `json:"revocation,omitempty"`
}

// Pending is a request waiting for a human, key "<agent>.<request_id>" in
// the pending bucket, with a per-key TTL of the approval window.
type Pending struct {
	Decision Decision  `json:"decision"`
	Deadline time.Time `json:"deadline"`
}

// Event ids that a redelivery may publish again are derived, never random,
// so that the audit stream's de-duplication stores them once.

// DecisionEventID is the id of the jit.decided event that decides request
// in the given way ("policy", "human", "timeout", "suspended").
func DecisionEventID(requestID, how string) string { return requestID + "/" + how }

// WithdrawnEventID is the id of a request's jit.withdrawn event. The
// jit.decided that denies a withdrawn pending request is
// DecisionEventID(requestID, "withdrawn").
func WithdrawnEventID(requestID string) string { return requestID + "/withdraw" }

// GrantedEventID is the id of a grant's jit.granted event.
func GrantedEventID(grantID string) string { return grantID + "/granted" }

// RevokedEventID is the id of a grant's one jit.revoked event.
func RevokedEventID(grantID string) string { return grantID + "/revoked" }

// SuspendedEventID is the id of the jit.suspended event caused by the
// guardrail.fired event with id guardrailEventID.
func SuspendedEventID(guardrailEventID string) string { return guardrailEventID + "/suspended" }

// RejectedEventID is the id of a jit.rejected event about a malformed
// message at stream sequence seq read by consumer durable.
// The '/' keeps it out of the space of ids a client may choose (ValidID), so
// no request id can collide with it in the de-duplication window.
func RejectedEventID(durable string, seq uint64) string {
	return "rej/" + durable + "/" + strconv.FormatUint(seq, 10)
}

// RecordRejectedEventID is the id of the jit.rejected event that reports
// the value of key at revision rev in bucket as undecodable: one event per
// stored value, however often a start reads it.
func RecordRejectedEventID(bucket, key string, rev uint64) string {
	return "rej/" + bucket + "/" + key + "/" + strconv.FormatUint(rev, 10)
}
