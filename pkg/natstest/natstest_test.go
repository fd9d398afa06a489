package natstest_test

import (
	"context"
	"testing"
	"time"

	"github.com/agentjit/jit/pkg/natstest"
	"github.com/stretchr/testify/require"
)

// ReadAudit returns the whole list or an error, never a partial list: an
// absence assertion must not pass on a read that failed.
func TestReadAuditFailsInsteadOfReturningPart(t *testing.T) {
	env := natstest.Setup(t)
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	for _, s := range []string{"jit.test.a", "jit.test.b", "jit.other.a"} {
		_, err := env.JS.Publish(ctx, s, []byte("x"))
		require.NoError(t, err)
	}
	msgs, err := natstest.ReadAudit(ctx, env.JS, "jit.test.>")
	require.NoError(t, err)
	require.Len(t, msgs, 2)
	require.Equal(t, "jit.test.b", msgs[1].Subject)

	none, err := natstest.ReadAudit(ctx, env.JS, "jit.nothing.>")
	require.NoError(t, err, "no match is an empty list, not an error")
	require.Empty(t, none)

	env.NC.Close()
	msgs, err = natstest.ReadAudit(ctx, env.JS, "jit.test.>")
	require.Error(t, err, "a read on a closed connection")
	require.Nil(t, msgs)
}
