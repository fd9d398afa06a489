// Package failpoint kills the process at a named point of a write, so that
// a test can check what a crash at exactly that instant leaves behind and
// that a restart finishes it.
//
// A point is a call Hit("approval/after-lease") on the write's path. It
// does anything only in a binary built with the build tag failpoint (the
// tests build one; `go build` without the tag, as every shipped binary is
// made, compiles Hit to an empty function) and only when the environment
// variable JIT_FAILPOINT names the point: then the process sends itself
// SIGKILL there, as an OOM kill or a power cut would stop it, with no
// deferred call, flush or drain.
package failpoint

// Env is the environment variable that names the points to kill at,
// separated by commas.
const Env = "JIT_FAILPOINT"

// The points compiled into the services.
const (
	// ApprovalAfterGranted: jit.granted is on the stream; no lease, no key.
	ApprovalAfterGranted = "approval/after-granted"
	// ApprovalAfterLease: the lease is stored; the grant key is not.
	ApprovalAfterLease = "approval/after-lease"
	// ApprovalAfterAnswer: a human answer is recorded in the pending
	// record; its jit.decided is not published.
	ApprovalAfterAnswer = "approval/after-answer"
	// RevokerAfterRevoking: the lease says revoking; jit.revoked is not
	// published.
	RevokerAfterRevoking = "revoker/after-revoking"
	// RevokerAfterEvent: jit.revoked is published; the lease still says
	// revoking.
	RevokerAfterEvent = "revoker/after-event"
)
