package audit

import (
	"crypto/ed25519"
	"crypto/rand"
	"crypto/x509"
	"encoding/base64"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/agentjit/jit/pkg/events"
)

// LoadOrCreateKey reads the Ed25519 private key at path (PEM, PKCS #8, as
// `openssl genpkey -algorithm ed25519` writes it), or, when there is no file
// there, makes one: the directory with mode 0700, the key with mode 0600
// (never overwriting a file that appeared meanwhile). It also writes the
// public key next to it (PublicKeyPath) when that file is missing. created
// reports a new key.
func LoadOrCreateKey(path string) (key ed25519.PrivateKey, created bool, err error) {
	b, err := os.ReadFile(path)
	switch {
	case err == nil:
		key, err = ParsePrivateKey(b)
		if err != nil {
			return nil, false, fmt.Errorf("audit key %s: %w", path, err)
		}
	case errors.Is(err, os.ErrNotExist):
		if key, err = createKey(path); errors.Is(err, os.ErrExist) {
			return LoadOrCreateKey(path) // another process made it first
		} else if err != nil {
			return nil, false, err
		}
		created = true
	default:
		return nil, false, fmt.Errorf("audit key: %w", err)
	}
	pubPath := PublicKeyPath(path)
	if _, err := os.Stat(pubPath); errors.Is(err, os.ErrNotExist) {
		if err := os.WriteFile(pubPath, PublicKeyPEM(key.Public().(ed25519.PublicKey)), 0o644); err != nil {
			return nil, false, fmt.Errorf("audit public key: %w", err)
		}
	}
	return key, created, nil
}

func createKey(path string) (ed25519.PrivateKey, error) {
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return nil, fmt.Errorf("audit key directory: %w", err)
	}
	_, key, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		return nil, err
	}
	der, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return nil, err
	}
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return nil, err
	}
	if err := pem.Encode(f, &pem.Block{Type: "PRIVATE KEY", Bytes: der}); err != nil {
		_ = f.Close()
		return nil, err
	}
	if err := f.Sync(); err != nil {
		_ = f.Close()
		return nil, err
	}
	return key, f.Close()
}

// PublicKeyPath is where LoadOrCreateKey writes the public key of the key at
// keyPath: the same name with ".pub" instead of ".key" (or ".pub" appended).
func PublicKeyPath(keyPath string) string {
	return strings.TrimSuffix(keyPath, ".key") + ".pub"
}

// PublicKeyPEM encodes pub as a PEM "PUBLIC KEY" (PKIX), as `openssl pkey
// -pubout` writes it.
func PublicKeyPEM(pub ed25519.PublicKey) []byte {
	der, _ := x509.MarshalPKIXPublicKey(pub)
	return pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der})
}

// PublicKeyText is the public key as one line of base64 (its 32 raw bytes),
// as the auditor logs it.
func PublicKeyText(pub ed25519.PublicKey) string { return base64.StdEncoding.EncodeToString(pub) }

// ParsePrivateKey reads a PEM PKCS #8 Ed25519 private key.
func ParsePrivateKey(b []byte) (ed25519.PrivateKey, error) {
	blk, _ := pem.Decode(b)
	if blk == nil || blk.Type != "PRIVATE KEY" {
		return nil, errors.New("not a PEM PRIVATE KEY")
	}
	k, err := x509.ParsePKCS8PrivateKey(blk.Bytes)
	if err != nil {
		return nil, err
	}
	key, ok := k.(ed25519.PrivateKey)
	if !ok {
		return nil, errors.New("not an Ed25519 key")
	}
	return key, nil
}

// ParsePublicKey reads an Ed25519 public key in any of the forms the system
// shows it: PEM "PUBLIC KEY" (the .pub file), a PEM private key (its public
// half), or the 32 raw bytes as base64 or hex on one line (the auditor's log).
func ParsePublicKey(b []byte) (ed25519.PublicKey, error) {
	if blk, _ := pem.Decode(b); blk != nil {
		switch blk.Type {
		case "PUBLIC KEY":
			k, err := x509.ParsePKIXPublicKey(blk.Bytes)
			if err != nil {
				return nil, err
			}
			pub, ok := k.(ed25519.PublicKey)
			if !ok {
				return nil, errors.New("not an Ed25519 public key")
			}
			return pub, nil
		case "PRIVATE KEY":
			key, err := ParsePrivateKey(b)
			if err != nil {
				return nil, err
			}
			return key.Public().(ed25519.PublicKey), nil
		}
		return nil, fmt.Errorf("PEM block %q is not a key", blk.Type)
	}
	s := strings.TrimSpace(string(b))
	if raw, err := base64.StdEncoding.DecodeString(s); err == nil && len(raw) == ed25519.PublicKeySize {
		return ed25519.PublicKey(raw), nil
	}
	if raw, err := hex.DecodeString(s); err == nil && len(raw) == ed25519.PublicKeySize {
		return ed25519.PublicKey(raw), nil
	}
	return nil, errors.New("not an Ed25519 public key (PEM, base64 or hex)")
}

// Keys are the public keys a verifier trusts, by key id.
type Keys map[string]ed25519.PublicKey

// NewKeys returns the set of the given keys.
func NewKeys(pubs ...ed25519.PublicKey) Keys {
	k := Keys{}
	for _, p := range pubs {
		k[KeyID(p)] = p
	}
	return k
}

// LoadKeys reads public keys from files (ParsePublicKey's forms).
func LoadKeys(paths ...string) (Keys, error) {
	k := Keys{}
	for _, p := range paths {
		b, err := os.ReadFile(p)
		if err != nil {
			return nil, err
		}
		pub, err := ParsePublicKey(b)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", p, err)
		}
		k[KeyID(pub)] = pub
	}
	return k, nil
}

// Verify checks c's signature: ErrUnknownKey when its key id is not in k,
// ErrBadSignature when the signature does not verify.
func (k Keys) Verify(c events.Checkpoint) error {
	pub, ok := k[c.KeyID]
	if !ok {
		return fmt.Errorf("%w: key id %q", ErrUnknownKey, c.KeyID)
	}
	sig, err := base64.StdEncoding.DecodeString(c.Signature)
	if err != nil || !ed25519.Verify(pub, SigningBytes(c), sig) {
		return fmt.Errorf("%w (key id %s)", ErrBadSignature, c.KeyID)
	}
	return nil
}

// IDs lists the key ids.
func (k Keys) IDs() []string {
	ids := make([]string, 0, len(k))
	for id := range k {
		ids = append(ids, id)
	}
	return ids
}
