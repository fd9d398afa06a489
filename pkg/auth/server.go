package auth

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"maps"
	"net"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
)

// MaxControlLine is the control line a server must accept: the services'
// JWTs, with their permissions, travel in CONNECT.
const MaxControlLine = 64 << 10

// ConfigureServer turns on operator-mode authentication in o: the Store's
// operator is trusted, its system account is the server's, and accounts are
// resolved from a directory (resolverDir) that is preloaded with every
// account the Store knows. Updates pushed to the running server
// (PushAccount) are kept there too.
func (s *Store) ConfigureServer(o *server.Options, resolverDir string) error {
	oc, err := s.OperatorClaims()
	if err != nil {
		return err
	}
	accounts, err := s.Accounts()
	if err != nil {
		return err
	}
	res, err := server.NewDirAccResolver(resolverDir, 0, 2*time.Minute, server.NoDelete)
	if err != nil {
		return fmt.Errorf("account resolver %s: %w", resolverDir, err)
	}
	for pub, tok := range accounts {
		if err := res.Store(pub, tok); err != nil {
			res.Close()
			return fmt.Errorf("account resolver: store %s: %w", pub, err)
		}
	}
	// A service user's JWT carries its subject permissions, which do not
	// fit the default 4 KiB control line of CONNECT.
	o.MaxControlLine = max(o.MaxControlLine, MaxControlLine)
	o.TrustedOperators = append(o.TrustedOperators, oc)
	o.SystemAccount = s.sysPub
	o.AccountResolver = res
	return nil
}

// ServerConfig is the part of a nats-server configuration file that makes an
// external server (or each node of a cluster) trust this Store: the
// operator, the system account, a full account resolver in resolverDir and
// every account preloaded. Append the listen, JetStream and cluster blocks.
func (s *Store) ServerConfig(resolverDir string) (string, error) {
	op, err := s.OperatorJWT()
	if err != nil {
		return "", err
	}
	accounts, err := s.Accounts()
	if err != nil {
		return "", err
	}
	var b strings.Builder
	fmt.Fprintf(&b, "# Written by jitctl creds init: the JIT system's accounts. Regenerate rather than edit.\n")
	fmt.Fprintf(&b, "max_control_line: %d\n", MaxControlLine)
	fmt.Fprintf(&b, "operator: %q\n", op)
	fmt.Fprintf(&b, "system_account: %q\n", s.sysPub)
	fmt.Fprintf(&b, "resolver: {\n  type: full\n  dir: %q\n  allow_delete: false\n  interval: \"2m\"\n}\n", filepath.ToSlash(resolverDir))
	fmt.Fprintf(&b, "resolver_preload: {\n")
	for _, pub := range slices.Sorted(maps.Keys(accounts)) {
		fmt.Fprintf(&b, "  %s: %q\n", pub, accounts[pub])
	}
	fmt.Fprintf(&b, "}\n")
	return b.String(), nil
}

// PushAccount sends an account JWT to the servers through nc, a connection
// of the system account: a server with a full or directory resolver stores
// it, applies it at once (a revocation closes the revoked users'
// connections) and shares it with the rest of its cluster.
func PushAccount(ctx context.Context, nc *nats.Conn, accountJWT string) error {
	resp, err := nc.RequestWithContext(ctx, "$SYS.REQ.CLAIMS.UPDATE", []byte(accountJWT))
	if err != nil {
		return fmt.Errorf("push account: %w", err)
	}
	var r struct {
		Data struct {
			Code    int    `json:"code"`
			Message string `json:"message"`
		} `json:"data"`
		Error *struct {
			Code        int    `json:"code"`
			Description string `json:"description"`
		} `json:"error"`
	}
	if err := json.Unmarshal(resp.Data, &r); err != nil {
		return fmt.Errorf("push account: answer %q: %w", resp.Data, err)
	}
	if r.Error != nil {
		return fmt.Errorf("push account: %s (%d)", r.Error.Description, r.Error.Code)
	}
	if r.Data.Code != 200 {
		return fmt.Errorf("push account: %s (%d)", r.Data.Message, r.Data.Code)
	}
	return nil
}

// CheckListen refuses a NATS client listener beyond the loopback interface
// without TLS, unless allowPlaintext: credentials' JWTs and approvers'
// tokens would cross the network in clear.
func CheckListen(addr string, withTLS, allowPlaintext bool) error {
	if withTLS || allowPlaintext {
		return nil
	}
	if lo, err := loopback(addr); err != nil || lo {
		return err
	}
	return fmt.Errorf("refusing to listen for NATS on %s without TLS: credentials and approver tokens would cross the network in clear; give --tls-cert and --tls-key (or --allow-plaintext)", addr)
}

// CheckRouteListen is CheckListen for a cluster node's route listener:
// without route TLS, the replication of the audit stream and every bucket
// (grants, configuration with the approvers' token hashes) would cross
// the network in clear.
func CheckRouteListen(addr string, withTLS, allowPlaintext bool) error {
	if withTLS || allowPlaintext {
		return nil
	}
	if lo, err := loopback(addr); err != nil || lo {
		return err
	}
	return fmt.Errorf("refusing to accept routes on %s without TLS: the replicated grants, configuration and audit events would cross the network in clear; give --cluster-tls-cert, --cluster-tls-key and --cluster-tls-ca (or --allow-plaintext)", addr)
}

// loopback says whether addr's host is the loopback interface.
func loopback(addr string) (bool, error) {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return false, fmt.Errorf("nats listen address %q: %w", addr, err)
	}
	if host == "localhost" {
		return true, nil
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback(), nil
}

// RouteUser is the user name every route of a jitd cluster presents.
const RouteUser = "jit-route"

// RoutePassword is the password every route of a jitd cluster presents and
// requires: derived from the operator's seed, so every node started with
// the same keys directory (or a copy of it) knows it and no other server
// can join the cluster. It is a MAC, not the seed: a route's password
// reveals nothing that could mint a credential.
func (s *Store) RoutePassword() (string, error) {
	seed, err := s.operator.Seed()
	if err != nil {
		return "", fmt.Errorf("operator seed: %w", err)
	}
	m := hmac.New(sha256.New, seed)
	m.Write([]byte("jit cluster route v1"))
	return hex.EncodeToString(m.Sum(nil)), nil
}
