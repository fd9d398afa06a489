package auth

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"

	"github.com/nats-io/jwt/v2"
	"github.com/nats-io/nats.go"
)

// Options returns the connection options of an issued credential (JWT,
// seed, and the inbox prefix its permissions allow), for a program that
// holds it in memory.
func (i Issued) Options() ([]nats.Option, error) {
	tok, err := jwt.ParseDecoratedJWT(i.Creds)
	if err != nil {
		return nil, err
	}
	kp, err := jwt.ParseDecoratedUserNKey(i.Creds)
	if err != nil {
		return nil, err
	}
	seed, err := kp.Seed()
	if err != nil {
		return nil, err
	}
	return []nats.Option{nats.UserJWTAndSeed(tok, string(seed)), nats.CustomInboxPrefix(i.Principal.InboxPrefix())}, nil
}

// Wanted is a principal that a deployment must have a credential for.
type Wanted struct {
	Principal Principal
	Scope     Scope
}

// EnsureResult says what EnsureCreds did.
type EnsureResult struct {
	// Issued are the principals whose credentials file was written now.
	Issued []Principal
	// Accounts are the account JWTs that changed (new principals, new
	// scopes): push them to the servers.
	Accounts []string
}

// EnsureCreds makes sure dir (mode 0700) holds a valid credentials file
// (mode 0600) for every wanted principal: a file this Store issued for it,
// not revoked, is kept; a missing or stale one is replaced.
func (s *Store) EnsureCreds(dir string, want []Wanted) (EnsureResult, error) {
	var res EnsureResult
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return res, fmt.Errorf("credentials directory: %w", err)
	}
	if err := os.Chmod(dir, 0o700); err != nil {
		return res, err
	}
	for _, w := range want {
		path := filepath.Join(dir, w.Principal.CredsFile())
		b, err := os.ReadFile(path)
		if err != nil && !errors.Is(err, fs.ErrNotExist) {
			return res, err
		}
		if err == nil && s.Valid(w.Principal, b) {
			if err := os.Chmod(path, 0o600); err != nil {
				return res, err
			}
			tok, err := s.SetScope(w.Principal, w.Scope)
			if err != nil {
				return res, err
			}
			if tok != "" {
				res.Accounts = append(res.Accounts, tok)
			}
			continue
		}
		is, err := s.Issue(w.Principal, w.Scope)
		if err != nil {
			return res, fmt.Errorf("issue %s: %w", w.Principal, err)
		}
		if err := writeFile(path, is.Creds); err != nil {
			return res, err
		}
		res.Issued = append(res.Issued, w.Principal)
		if is.AccountJWT != "" {
			res.Accounts = append(res.Accounts, is.AccountJWT)
		}
	}
	return res, nil
}

// WriteCreds writes a credential to path, mode 0600.
func WriteCreds(path string, creds []byte) error { return writeFile(path, creds) }

// SystemCreds returns the system credential kept in the Store's directory
// (sys.creds), making it on first use: jitctl creds pushes account changes
// with it.
func (s *Store) SystemCreds() (string, error) {
	path := filepath.Join(s.dir, "sys.creds")
	err := s.locked(func() error {
		b, err := os.ReadFile(path)
		if err == nil && bytes.Contains(b, []byte("BEGIN NATS USER JWT")) {
			return nil
		}
		creds, err := s.SystemUser()
		if err != nil {
			return err
		}
		return writeFile(path, creds)
	})
	return path, err
}

// Push sends every account JWT through nc, a system connection.
func Push(ctx context.Context, nc *nats.Conn, accounts []string) error {
	for _, tok := range slices.Compact(slices.Clone(accounts)) {
		if err := PushAccount(ctx, nc, tok); err != nil {
			return err
		}
	}
	return nil
}
