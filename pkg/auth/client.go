package auth

import (
	"flag"
	"fmt"
	"os"

	"github.com/nats-io/jwt/v2"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// ClientOptions are how a program connects to the JIT system's NATS: a
// credentials file and TLS, named as the nats CLI names them. jitctl, the
// service binaries, jit-mcp and the examples all take them.
type ClientOptions struct {
	// Creds is a credentials file (JWT and seed), NATS_CREDS by default.
	Creds string
	// TLSCA is a PEM file of the CA that signed the server's certificate.
	TLSCA string
	// TLSCert and TLSKey are a client certificate, for servers that verify
	// clients.
	TLSCert, TLSKey string
}

// Flags registers --creds, --tlsca, --tlscert and --tlskey on fs, with
// defaults from the environment (NATS_CREDS, NATS_CA, NATS_CERT, NATS_KEY,
// as the nats CLI reads them).
func (o *ClientOptions) Flags(fs *flag.FlagSet, env func(string) string) {
	if env == nil {
		env = os.Getenv
	}
	fs.StringVar(&o.Creds, "creds", env("NATS_CREDS"), "NATS credentials file of the principal to act as (env NATS_CREDS)")
	fs.StringVar(&o.TLSCA, "tlsca", env("NATS_CA"), "CA certificate (PEM) to verify the NATS server's TLS certificate (env NATS_CA)")
	fs.StringVar(&o.TLSCert, "tlscert", env("NATS_CERT"), "client TLS certificate (PEM), for servers that verify clients (env NATS_CERT)")
	fs.StringVar(&o.TLSKey, "tlskey", env("NATS_KEY"), "client TLS key (PEM) (env NATS_KEY)")
}

// NATSOptions turns o into connection options. With a credentials file,
// a service's connection also gets the inbox prefix its permissions allow.
func (o ClientOptions) NATSOptions() ([]nats.Option, error) {
	var opts []nats.Option
	if o.Creds != "" {
		p, err := CredsPrincipal(o.Creds)
		if err != nil {
			return nil, err
		}
		opts = append(opts, nats.UserCredentials(o.Creds), nats.CustomInboxPrefix(p.InboxPrefix()))
	}
	if o.TLSCA != "" {
		opts = append(opts, nats.RootCAs(o.TLSCA))
	}
	if (o.TLSCert == "") != (o.TLSKey == "") {
		return nil, fmt.Errorf("--tlscert and --tlskey go together")
	}
	if o.TLSCert != "" {
		opts = append(opts, nats.ClientCert(o.TLSCert, o.TLSKey))
	}
	return opts, nil
}

// Principal is the principal the credentials file names; ok is false
// without a credentials file.
func (o ClientOptions) Principal() (p Principal, ok bool, err error) {
	if o.Creds == "" {
		return Principal{}, false, nil
	}
	p, err = CredsPrincipal(o.Creds)
	return p, err == nil, err
}

// CredsPrincipal reads the principal a credentials file was issued for
// (its JWT's name). It does not verify the JWT: the server does.
func CredsPrincipal(path string) (Principal, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return Principal{}, fmt.Errorf("read credentials: %w", err)
	}
	return credsPrincipal(b)
}

func credsPrincipal(b []byte) (Principal, error) {
	tok, err := jwt.ParseDecoratedJWT(b)
	if err != nil {
		return Principal{}, fmt.Errorf("read credentials: %w", err)
	}
	uc, err := jwt.DecodeUserClaims(tok)
	if err != nil {
		return Principal{}, fmt.Errorf("read credentials: %w", err)
	}
	p, err := ParsePrincipal(uc.Name)
	if err != nil {
		return Principal{}, fmt.Errorf("credentials: %w", err)
	}
	return p, nil
}

// JetStream returns the JetStream context a principal uses: a client
// principal's read-only requests go through JSPrefix (its account has no
// JetStream of its own); a service, the administrator and a connection
// without credentials use the server's own API.
func JetStream(nc *nats.Conn, p Principal, withCreds bool) (jetstream.JetStream, error) {
	if withCreds && p.IsClient() {
		return jetstream.NewWithAPIPrefix(nc, JSPrefix)
	}
	return jetstream.New(nc)
}

// APIPrefix is the JetStream API prefix (for raw requests) of the same
// choice as JetStream.
func APIPrefix(p Principal, withCreds bool) string {
	if withCreds && p.IsClient() {
		return JSPrefix
	}
	return "$JS.API"
}
