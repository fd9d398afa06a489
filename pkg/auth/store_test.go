package auth

import (
	"os"
	"path/filepath"
	"slices"
	"testing"

	"github.com/nats-io/jwt/v2"
	"github.com/stretchr/testify/require"
)

var agentA = Principal{Kind: KindAgent, ID: "agent-a"}

// TestStoreKeepsItsKeys: a reopened store is the same root of trust (the
// same operator and accounts, the same registry), and its key files are
// readable by their owner only.
func TestStoreKeepsItsKeys(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "keys")
	s1, err := OpenStore(dir)
	require.NoError(t, err)
	op1, err := s1.OperatorJWT()
	require.NoError(t, err)
	is, err := s1.Issue(agentA, Scope{})
	require.NoError(t, err)
	require.NotEmpty(t, is.AccountJWT, "a new principal's account must reach the servers")

	s2, err := OpenStore(dir)
	require.NoError(t, err)
	op2, err := s2.OperatorJWT()
	require.NoError(t, err)
	c1, err := jwt.DecodeOperatorClaims(op1)
	require.NoError(t, err)
	c2, err := jwt.DecodeOperatorClaims(op2)
	require.NoError(t, err)
	require.Equal(t, c1.Subject, c2.Subject, "the same operator")
	require.Equal(t, s1.JITAccount(), s2.JITAccount())
	require.Equal(t, s1.SystemAccount(), s2.SystemAccount())
	require.True(t, s2.Valid(agentA, is.Creds), "a credential issued before the reopen stays valid")

	info, err := os.Stat(dir)
	require.NoError(t, err)
	require.Equal(t, os.FileMode(0o700), info.Mode().Perm())
	entries, err := os.ReadDir(dir)
	require.NoError(t, err)
	require.NotEmpty(t, entries)
	for _, e := range entries {
		if e.IsDir() {
			continue
		}
		fi, err := e.Info()
		require.NoError(t, err)
		require.Equal(t, os.FileMode(0o600), fi.Mode().Perm(), e.Name())
	}
}

// TestValidAndRevoke: Valid accepts only a credential this store issued for
// that principal and has not revoked; Revoke cuts off every credential of
// the principal and none issued after it.
func TestValidAndRevoke(t *testing.T) {
	s, err := OpenStore(t.TempDir())
	require.NoError(t, err)
	is, err := s.Issue(agentA, Scope{})
	require.NoError(t, err)
	require.True(t, s.Valid(agentA, is.Creds))
	require.False(t, s.Valid(Principal{Kind: KindAgent, ID: "agent-b"}, is.Creds), "another principal's file")
	require.False(t, s.Valid(agentA, []byte("garbage")))

	other, err := OpenStore(t.TempDir())
	require.NoError(t, err)
	foreign, err := other.Issue(agentA, Scope{})
	require.NoError(t, err)
	require.False(t, s.Valid(agentA, foreign.Creds), "a credential of another deployment")

	second, err := s.Issue(agentA, Scope{})
	require.NoError(t, err)
	require.Empty(t, second.AccountJWT, "the account did not change")
	r, err := s.Revoke(agentA)
	require.NoError(t, err)
	require.Equal(t, 2, r.Users)
	require.NotEmpty(t, r.AccountJWT, "the revocation travels in the account JWT")
	ac, err := jwt.DecodeAccountClaims(r.AccountJWT)
	require.NoError(t, err)
	for _, u := range []string{is.User, second.User} {
		_, revoked := ac.Revocations[u]
		require.True(t, revoked, u)
	}
	require.False(t, s.Valid(agentA, is.Creds))
	require.False(t, s.Valid(agentA, second.Creds))

	third, err := s.Issue(agentA, Scope{})
	require.NoError(t, err)
	require.True(t, s.Valid(agentA, third.Creds), "a credential issued after the revocation works")

	_, err = s.Revoke(Principal{Kind: KindAgent, ID: "never-issued"})
	require.Error(t, err)
	_, err = s.Revoke(Principal{Kind: "root", ID: "x"})
	require.ErrorIs(t, err, ErrBadPrincipal)
}

// TestEphemeralIsOnlyForServices: client principals get recorded
// credentials only; a service's ephemeral credential is not in the registry.
func TestEphemeralIsOnlyForServices(t *testing.T) {
	s, err := OpenStore(t.TempDir())
	require.NoError(t, err)
	_, err = s.Ephemeral(agentA)
	require.ErrorIs(t, err, ErrBadPrincipal)
	is, err := s.Ephemeral(Service(ServiceRevoker))
	require.NoError(t, err)
	require.Equal(t, s.JITAccount(), is.Account)
	ps, err := s.Principals()
	require.NoError(t, err)
	require.Empty(t, ps, "an ephemeral credential leaves no record")
	_, err = s.Ephemeral(Service("no-such-service"))
	require.ErrorIs(t, err, ErrBadPrincipal)
}

// TestEnsureCreds: the credentials directory keeps a valid file across
// runs, replaces a missing, foreign or revoked one, and keeps its modes.
func TestEnsureCreds(t *testing.T) {
	s, err := OpenStore(t.TempDir())
	require.NoError(t, err)
	dir := filepath.Join(t.TempDir(), "creds")
	guard := Principal{Kind: KindGuardrail, ID: "pricing-guard"}
	want := []Wanted{{Principal: DefaultOperator}, {Principal: agentA}, {Principal: guard, Scope: Scope{Agents: []string{"agent-a"}}}}

	res, err := s.EnsureCreds(dir, want)
	require.NoError(t, err)
	require.Len(t, res.Issued, 3)
	require.Len(t, res.Accounts, 3)
	for _, f := range []string{"operator.creds", "agent-agent-a.creds", "guardrail-pricing-guard.creds"} {
		fi, err := os.Stat(filepath.Join(dir, f))
		require.NoError(t, err, f)
		require.Equal(t, os.FileMode(0o600), fi.Mode().Perm(), f)
	}
	before, err := os.ReadFile(filepath.Join(dir, "agent-agent-a.creds"))
	require.NoError(t, err)

	res, err = s.EnsureCreds(dir, want)
	require.NoError(t, err)
	require.Empty(t, res.Issued, "nothing to do the second time")
	require.Empty(t, res.Accounts)
	after, err := os.ReadFile(filepath.Join(dir, "agent-agent-a.creds"))
	require.NoError(t, err)
	require.Equal(t, before, after, "a valid file is kept")

	// A new scope for the guardrail source changes its account, not its file.
	want[2].Scope = Scope{Agents: []string{"agent-a", "agent-b"}}
	res, err = s.EnsureCreds(dir, want)
	require.NoError(t, err)
	require.Empty(t, res.Issued)
	require.Len(t, res.Accounts, 1)

	// Revoked, or replaced by someone else's: issued again.
	_, err = s.Revoke(agentA)
	require.NoError(t, err)
	require.NoError(t, os.WriteFile(filepath.Join(dir, "operator.creds"), []byte("not a credential"), 0o644))
	res, err = s.EnsureCreds(dir, want)
	require.NoError(t, err)
	require.ElementsMatch(t, []Principal{agentA, DefaultOperator}, res.Issued)
	fi, err := os.Stat(filepath.Join(dir, "operator.creds"))
	require.NoError(t, err)
	require.Equal(t, os.FileMode(0o600), fi.Mode().Perm())

	ps, err := s.Principals()
	require.NoError(t, err)
	names := make([]string, 0, len(ps))
	for _, p := range ps {
		names = append(names, p.Principal.String())
		if p.Principal == agentA {
			require.Equal(t, 1, p.Active)
			require.Equal(t, 1, p.Revoked)
		}
		if p.Principal == guard {
			require.Equal(t, []string{"agent-a", "agent-b"}, p.Scope.Agents)
		}
	}
	require.True(t, slices.IsSorted(names))
}

// TestCredsFileNames: the layout issue 9 names.
func TestCredsFileNames(t *testing.T) {
	for p, want := range map[Principal]string{
		DefaultOperator:                            "operator.creds",
		DefaultSIEM:                                "siem.creds",
		DefaultChecker:                             "checker.creds",
		{Kind: KindAgent, ID: "market-intel"}:      "agent-market-intel.creds",
		{Kind: KindGuardrail, ID: "pricing-guard"}: "guardrail-pricing-guard.creds",
		{Kind: KindSIEM, ID: "splunk"}:             "siem-splunk.creds",
		{Kind: KindAgent, ID: "agent"}:             "agent-agent.creds",
	} {
		require.Equal(t, want, p.CredsFile(), p.String())
	}
}

// TestRoutePassword: every node opened on the same keys (or a copy) derives
// the same route password, which is not the operator's seed; other keys
// give another.
func TestRoutePassword(t *testing.T) {
	dir := t.TempDir()
	a, err := OpenStore(dir)
	require.NoError(t, err)
	again, err := OpenStore(dir)
	require.NoError(t, err)
	other, err := OpenStore(t.TempDir())
	require.NoError(t, err)
	pa, err := a.RoutePassword()
	require.NoError(t, err)
	pb, err := again.RoutePassword()
	require.NoError(t, err)
	po, err := other.RoutePassword()
	require.NoError(t, err)
	require.Equal(t, pa, pb)
	require.NotEqual(t, pa, po)
	require.Len(t, pa, 64)
	seed, err := a.operator.Seed()
	require.NoError(t, err)
	require.NotContains(t, pa, string(seed))
}
