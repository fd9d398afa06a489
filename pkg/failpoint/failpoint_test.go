package failpoint_test

import (
	"testing"

	"github.com/agentjit/jit/pkg/failpoint"
	"github.com/stretchr/testify/require"
)

// Without the build tag, an armed point does nothing: the shipped binaries
// cannot be killed through the environment.
func TestHitIsInertWithoutTheTag(t *testing.T) {
	if failpoint.Enabled {
		t.Skip("built with -tags failpoint: Hit would kill this test")
	}
	t.Setenv(failpoint.Env, failpoint.ApprovalAfterLease)
	failpoint.Hit(failpoint.ApprovalAfterLease)
	require.False(t, failpoint.Enabled)
}
