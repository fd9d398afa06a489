package auth

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"time"

	"github.com/nats-io/jwt/v2"
	"github.com/nats-io/nkeys"
)

// Store is the signing side of the credentials: the operator, system and
// services' account keys, the key that signs every client principal's
// users, and the registry of principals' accounts and issued users. It
// lives in one directory (jitd: <data-dir>/keys), mode 0700, its files 0600.
// Whoever can read it can mint any credential: it is the break-glass
// material of a deployment.
//
// Several processes may use one Store (jitd, and jitctl creds on the same
// data directory): every change takes an exclusive file lock and rereads
// the registry first.
type Store struct {
	dir                  string
	operator, sys, jit   nkeys.KeyPair
	signer               nkeys.KeyPair
	operatorPub, sysPub  string
	jitPub, signerPub    string
	operatorJWTCache     string
	operatorClaimsCached *jwt.OperatorClaims
}

// Files in a Store's directory.
const (
	fileOperator = "operator.nk"
	fileSys      = "sys-account.nk"
	fileJIT      = "jit-account.nk"
	fileSigner   = "principals-signer.nk"
	fileRegistry = "principals.json"
	fileLock     = ".lock"
)

// registry records the client principals' accounts and every user issued.
type registry struct {
	Version int `json:"version"`
	// Accounts maps a client principal's name to its account.
	Accounts map[string]*accountRecord `json:"accounts"`
	// Users maps a user's public key to what it was issued for.
	Users map[string]*userRecord `json:"users"`
}

type accountRecord struct {
	Account string    `json:"account"`
	Scope   Scope     `json:"scope,omitzero"`
	Created time.Time `json:"created"`
}

type userRecord struct {
	Principal string     `json:"principal"`
	Issued    time.Time  `json:"issued"`
	Revoked   *time.Time `json:"revoked,omitempty"`
}

// OpenStore opens the Store in dir, creating its keys on first use.
func OpenStore(dir string) (*Store, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("keys directory: %w", err)
	}
	if err := os.Chmod(dir, 0o700); err != nil {
		return nil, fmt.Errorf("keys directory: %w", err)
	}
	s := &Store{dir: dir}
	err := s.locked(func() error {
		var err error
		if s.operator, err = loadOrCreate(filepath.Join(dir, fileOperator), nkeys.CreateOperator); err != nil {
			return err
		}
		if s.sys, err = loadOrCreate(filepath.Join(dir, fileSys), nkeys.CreateAccount); err != nil {
			return err
		}
		if s.jit, err = loadOrCreate(filepath.Join(dir, fileJIT), nkeys.CreateAccount); err != nil {
			return err
		}
		if s.signer, err = loadOrCreate(filepath.Join(dir, fileSigner), nkeys.CreateAccount); err != nil {
			return err
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	s.operatorPub, _ = s.operator.PublicKey()
	s.sysPub, _ = s.sys.PublicKey()
	s.jitPub, _ = s.jit.PublicKey()
	s.signerPub, _ = s.signer.PublicKey()
	return s, nil
}

// Dir is the Store's directory.
func (s *Store) Dir() string { return s.dir }

// SystemAccount is the system account's public key.
func (s *Store) SystemAccount() string { return s.sysPub }

// JITAccount is the services' account public key.
func (s *Store) JITAccount() string { return s.jitPub }

func loadOrCreate(path string, create func() (nkeys.KeyPair, error)) (nkeys.KeyPair, error) {
	b, err := os.ReadFile(path)
	if err == nil {
		kp, err := nkeys.FromSeed([]byte(strings.TrimSpace(string(b))))
		if err != nil {
			return nil, fmt.Errorf("read key %s: %w", path, err)
		}
		return kp, nil
	}
	if !errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("read key %s: %w", path, err)
	}
	kp, err := create()
	if err != nil {
		return nil, err
	}
	seed, err := kp.Seed()
	if err != nil {
		return nil, err
	}
	if err := writeFile(path, append(seed, '\n')); err != nil {
		return nil, err
	}
	return kp, nil
}

// writeFile writes b to path atomically with mode 0600.
func writeFile(path string, b []byte) error {
	tmp, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".*")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name())
	if err := tmp.Chmod(0o600); err != nil {
		tmp.Close()
		return err
	}
	if _, err := tmp.Write(b); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Sync(); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	if err := os.Rename(tmp.Name(), path); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	return nil
}

// locked runs fn under the Store's exclusive file lock.
func (s *Store) locked(fn func() error) error {
	f, err := os.OpenFile(filepath.Join(s.dir, fileLock), os.O_CREATE|os.O_RDWR, 0o600)
	if err != nil {
		return fmt.Errorf("lock keys: %w", err)
	}
	defer f.Close()
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX); err != nil {
		return fmt.Errorf("lock keys: %w", err)
	}
	defer syscall.Flock(int(f.Fd()), syscall.LOCK_UN)
	return fn()
}

func (s *Store) readRegistry() (*registry, error) {
	r := &registry{Version: 1, Accounts: map[string]*accountRecord{}, Users: map[string]*userRecord{}}
	b, err := os.ReadFile(filepath.Join(s.dir, fileRegistry))
	if errors.Is(err, fs.ErrNotExist) {
		return r, nil
	}
	if err != nil {
		return nil, fmt.Errorf("read principals: %w", err)
	}
	if err := json.Unmarshal(b, r); err != nil {
		return nil, fmt.Errorf("read principals %s: %w", filepath.Join(s.dir, fileRegistry), err)
	}
	if r.Accounts == nil {
		r.Accounts = map[string]*accountRecord{}
	}
	if r.Users == nil {
		r.Users = map[string]*userRecord{}
	}
	return r, nil
}

func (s *Store) writeRegistry(r *registry) error {
	b, err := json.MarshalIndent(r, "", "  ")
	if err != nil {
		return err
	}
	return writeFile(filepath.Join(s.dir, fileRegistry), append(b, '\n'))
}

// update runs fn on the registry under the lock and writes it back if fn
// succeeds.
func (s *Store) update(fn func(r *registry) error) error {
	return s.locked(func() error {
		r, err := s.readRegistry()
		if err != nil {
			return err
		}
		if err := fn(r); err != nil {
			return err
		}
		return s.writeRegistry(r)
	})
}

// view runs fn on a fresh read of the registry.
func (s *Store) view(fn func(r *registry) error) error {
	return s.locked(func() error {
		r, err := s.readRegistry()
		if err != nil {
			return err
		}
		return fn(r)
	})
}

// OperatorJWT is the operator's JWT, which servers trust.
func (s *Store) OperatorJWT() (string, error) {
	if s.operatorJWTCache != "" {
		return s.operatorJWTCache, nil
	}
	oc := jwt.NewOperatorClaims(s.operatorPub)
	oc.Name = "jit"
	oc.SystemAccount = s.sysPub
	// A fixed issue time keeps the JWT (and servers' configuration files)
	// the same across runs.
	oc.IssuedAt = 0
	tok, err := oc.Encode(s.operator)
	if err != nil {
		return "", err
	}
	claims, err := jwt.DecodeOperatorClaims(tok)
	if err != nil {
		return "", err
	}
	s.operatorJWTCache, s.operatorClaimsCached = tok, claims
	return tok, nil
}

// OperatorClaims are the decoded operator JWT.
func (s *Store) OperatorClaims() (*jwt.OperatorClaims, error) {
	if _, err := s.OperatorJWT(); err != nil {
		return nil, err
	}
	return s.operatorClaimsCached, nil
}

// Accounts returns every account's JWT by public key: the system account,
// the services' account and every client principal's, each with its
// current revocations. Servers preload them.
func (s *Store) Accounts() (map[string]string, error) {
	out := map[string]string{}
	err := s.view(func(r *registry) error {
		var err error
		if out[s.sysPub], err = s.sysAccountJWT(); err != nil {
			return err
		}
		if out[s.jitPub], err = s.jitAccountJWT(r); err != nil {
			return err
		}
		for name, a := range r.Accounts {
			p, err := ParsePrincipal(name)
			if err != nil {
				return fmt.Errorf("registry: %w", err)
			}
			if out[a.Account], err = s.clientAccountJWT(r, p, a); err != nil {
				return err
			}
		}
		return nil
	})
	return out, err
}

func (s *Store) sysAccountJWT() (string, error) {
	ac := jwt.NewAccountClaims(s.sysPub)
	ac.Name = "SYS"
	return ac.Encode(s.operator)
}

func (s *Store) jitAccountJWT(r *registry) (string, error) {
	ac := jwt.NewAccountClaims(s.jitPub)
	ac.Name = "JIT"
	ac.Limits.JetStreamLimits = jwt.JetStreamLimits{MemoryStorage: -1, DiskStorage: -1, Streams: -1, Consumer: -1, MaxAckPending: -1, MemoryMaxStreamBytes: -1, DiskMaxStreamBytes: -1}
	ac.Exports = JITExports()
	s.addRevocations(r, ac, func(p Principal) bool { return !p.IsClient() })
	return ac.Encode(s.operator)
}

func (s *Store) clientAccountJWT(r *registry, p Principal, a *accountRecord) (string, error) {
	ac := jwt.NewAccountClaims(a.Account)
	ac.Name = p.String()
	ac.SigningKeys.Add(s.signerPub)
	ac.Imports = ClientImports(p, s.jitPub, a.Scope)
	name := p.String()
	s.addRevocations(r, ac, func(q Principal) bool { return q.String() == name })
	return ac.Encode(s.operator)
}

func (s *Store) addRevocations(r *registry, ac *jwt.AccountClaims, match func(Principal) bool) {
	for pub, u := range r.Users {
		if u.Revoked == nil {
			continue
		}
		p, err := ParsePrincipal(u.Principal)
		if err != nil || !match(p) {
			continue
		}
		ac.RevokeAt(pub, *u.Revoked)
	}
}

// Issued is a credential just made: its principal, the user's public key
// and the credentials file's content (JWT and seed, as the nats CLI reads
// it with --creds).
type Issued struct {
	Principal Principal
	User      string
	Creds     []byte
	// AccountJWT is the principal's account JWT when issuing created or
	// changed it (a server must learn it before the credential works);
	// empty otherwise.
	AccountJWT string
	Account    string
}

// Issue makes a new user credential for p. For a client principal it
// creates the principal's account on first use (or updates its scope), so
// that the returned AccountJWT must reach the servers (PushAccount) before
// the credential connects. Earlier credentials of p stay valid until
// revoked.
func (s *Store) Issue(p Principal, sc Scope) (Issued, error) {
	return s.issue(p, sc, true)
}

// Ephemeral makes a credential for a service or the administrator that is
// not recorded in the registry: jitd's in-process services get a fresh one
// at every start, which dies with the process.
func (s *Store) Ephemeral(p Principal) (Issued, error) {
	if p.IsClient() {
		return Issued{}, fmt.Errorf("%w: %s: only services and the administrator have ephemeral credentials", ErrBadPrincipal, p)
	}
	return s.issue(p, Scope{}, false)
}

func (s *Store) issue(p Principal, sc Scope, record bool) (Issued, error) {
	if err := p.Validate(); err != nil {
		return Issued{}, err
	}
	ukp, err := nkeys.CreateUser()
	if err != nil {
		return Issued{}, err
	}
	upub, _ := ukp.PublicKey()
	useed, _ := ukp.Seed()
	uc := jwt.NewUserClaims(upub)
	uc.Name = p.String()
	out := Issued{Principal: p, User: upub}
	change := s.update
	if !record {
		change = func(fn func(r *registry) error) error { return s.view(fn) }
	}
	err = change(func(r *registry) error {
		var signer nkeys.KeyPair
		switch {
		case p.Kind == KindService:
			perms, ok := ServicePermissions(p.ID)
			if !ok {
				return fmt.Errorf("%w: unknown service %q", ErrBadPrincipal, p.ID)
			}
			uc.Permissions = perms
			signer = s.jit
			out.Account = s.jitPub
		case p.Kind == KindAdmin:
			signer = s.jit
			out.Account = s.jitPub
		default:
			a := r.Accounts[p.String()]
			changed := false
			if a == nil {
				akp, err := nkeys.CreateAccount()
				if err != nil {
					return err
				}
				apub, _ := akp.PublicKey()
				a = &accountRecord{Account: apub, Scope: sc, Created: time.Now().UTC()}
				r.Accounts[p.String()] = a
				changed = true
			} else if !slices.Equal(a.Scope.Agents, sc.Agents) {
				a.Scope = sc
				changed = true
			}
			uc.IssuerAccount = a.Account
			signer = s.signer
			out.Account = a.Account
			if changed {
				tok, err := s.clientAccountJWT(r, p, a)
				if err != nil {
					return err
				}
				out.AccountJWT = tok
			}
		}
		tok, err := uc.Encode(signer)
		if err != nil {
			return err
		}
		creds, err := jwt.FormatUserConfig(tok, useed)
		if err != nil {
			return err
		}
		out.Creds = creds
		r.Users[upub] = &userRecord{Principal: p.String(), Issued: time.Now().UTC()}
		return nil
	})
	return out, err
}

// SetScope changes a client principal's scope (a guardrail source's
// agents) and returns its account JWT to push, or "" if nothing changed or
// the principal has no account yet.
func (s *Store) SetScope(p Principal, sc Scope) (string, error) {
	var tok string
	err := s.update(func(r *registry) error {
		a := r.Accounts[p.String()]
		if a == nil || slices.Equal(a.Scope.Agents, sc.Agents) {
			return nil
		}
		a.Scope = sc
		var err error
		tok, err = s.clientAccountJWT(r, p, a)
		return err
	})
	return tok, err
}

// Revoked is the outcome of a revocation: the account JWT that carries it
// (push it to the servers, which then close the principal's connections)
// and how many credentials it cut off.
type Revoked struct {
	Account    string
	AccountJWT string
	Users      int
}

// Revoke revokes every credential issued for p so far. Credentials issued
// afterwards work.
func (s *Store) Revoke(p Principal) (Revoked, error) {
	if err := p.Validate(); err != nil {
		return Revoked{}, err
	}
	var out Revoked
	err := s.update(func(r *registry) error {
		now := time.Now().UTC()
		for _, u := range r.Users {
			if u.Principal == p.String() && u.Revoked == nil {
				u.Revoked = &now
				out.Users++
			}
		}
		if out.Users == 0 {
			return fmt.Errorf("no credential of %s to revoke", p)
		}
		var err error
		if p.IsClient() {
			a := r.Accounts[p.String()]
			if a == nil {
				return fmt.Errorf("%s has no account", p)
			}
			out.Account = a.Account
			out.AccountJWT, err = s.clientAccountJWT(r, p, a)
		} else {
			out.Account = s.jitPub
			out.AccountJWT, err = s.jitAccountJWT(r)
		}
		return err
	})
	return out, err
}

// Valid reports whether the credentials file content creds is one this
// Store issued for p, to the account p has now, and not revoked: jitd keeps
// such a file across restarts and replaces any other.
func (s *Store) Valid(p Principal, creds []byte) bool {
	tok, err := jwt.ParseDecoratedJWT(creds)
	if err != nil {
		return false
	}
	uc, err := jwt.DecodeUserClaims(tok)
	if err != nil || uc.Name != p.String() {
		return false
	}
	if _, err := jwt.ParseDecoratedUserNKey(creds); err != nil {
		return false
	}
	ok := false
	_ = s.view(func(r *registry) error {
		u := r.Users[uc.Subject]
		if u == nil || u.Revoked != nil || u.Principal != p.String() {
			return nil
		}
		switch {
		case p.IsClient():
			a := r.Accounts[p.String()]
			ok = a != nil && uc.IssuerAccount == a.Account && uc.Issuer == s.signerPub
		default:
			ok = uc.Issuer == s.jitPub
		}
		return nil
	})
	return ok
}

// PrincipalInfo describes one registered client principal.
type PrincipalInfo struct {
	Principal Principal `json:"principal"`
	Account   string    `json:"account"`
	Scope     Scope     `json:"scope,omitzero"`
	Active    int       `json:"active_credentials"`
	Revoked   int       `json:"revoked_credentials"`
}

// Principals lists every principal that has an account or a credential,
// sorted by name.
func (s *Store) Principals() ([]PrincipalInfo, error) {
	by := map[string]*PrincipalInfo{}
	err := s.view(func(r *registry) error {
		for name, a := range r.Accounts {
			p, err := ParsePrincipal(name)
			if err != nil {
				return err
			}
			by[name] = &PrincipalInfo{Principal: p, Account: a.Account, Scope: a.Scope}
		}
		for _, u := range r.Users {
			pi := by[u.Principal]
			if pi == nil {
				p, err := ParsePrincipal(u.Principal)
				if err != nil {
					return err
				}
				pi = &PrincipalInfo{Principal: p, Account: s.jitPub}
				by[u.Principal] = pi
			}
			if u.Revoked != nil {
				pi.Revoked++
			} else {
				pi.Active++
			}
		}
		return nil
	})
	out := make([]PrincipalInfo, 0, len(by))
	for _, pi := range by {
		out = append(out, *pi)
	}
	slices.SortFunc(out, func(a, b PrincipalInfo) int { return strings.Compare(a.Principal.String(), b.Principal.String()) })
	return out, err
}

// SystemUser makes a credential of the system account, used to push
// account JWTs to servers ($SYS.REQ.CLAIMS.UPDATE). It is not recorded:
// keep it with the keys.
func (s *Store) SystemUser() ([]byte, error) {
	ukp, err := nkeys.CreateUser()
	if err != nil {
		return nil, err
	}
	upub, _ := ukp.PublicKey()
	useed, _ := ukp.Seed()
	uc := jwt.NewUserClaims(upub)
	uc.Name = "system:push"
	tok, err := uc.Encode(s.sys)
	if err != nil {
		return nil, err
	}
	return jwt.FormatUserConfig(tok, useed)
}
