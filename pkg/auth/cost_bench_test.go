package auth

import (
	"context"
	"path/filepath"
	"testing"
	"time"

	"github.com/nats-io/jwt/v2"
	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/nats-io/nkeys"
)

// The broker's own share of what isolation costs (BENCH.md, issue 9 item
// 10), without the services: an agent's API round trip, and a service
// consuming and acknowledging JetStream messages, on a server without
// authentication and on one whose accounts and permissions are this
// package's.
//
//	go test -run XXX -bench IsolationCost -count 6 ./auth/

// costServer starts a server: with a Store (operator mode) or without
// authentication (s nil).
func costServer(b *testing.B, s *Store) *server.Server {
	b.Helper()
	o := &server.Options{Host: "127.0.0.1", Port: -1, NoLog: true, NoSigs: true, JetStream: true, StoreDir: b.TempDir()}
	if s != nil {
		if err := s.ConfigureServer(o, filepath.Join(b.TempDir(), "resolver")); err != nil {
			b.Fatal(err)
		}
	}
	srv, err := server.NewServer(o)
	if err != nil {
		b.Fatal(err)
	}
	go srv.Start()
	if !srv.ReadyForConnections(10 * time.Second) {
		b.Fatal("server not ready")
	}
	b.Cleanup(srv.Shutdown)
	return srv
}

func costConnect(b *testing.B, srv *server.Server, opts ...nats.Option) *nats.Conn {
	b.Helper()
	nc, err := nats.Connect(srv.ClientURL(), opts...)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(nc.Close)
	return nc
}

// userWith signs a user of the services' account with perms.
func userWith(b *testing.B, s *Store, perms jwt.Permissions, inbox string) []nats.Option {
	b.Helper()
	ukp, _ := nkeys.CreateUser()
	upub, _ := ukp.PublicKey()
	seed, _ := ukp.Seed()
	uc := jwt.NewUserClaims(upub)
	uc.Name = "service:requester"
	uc.Permissions = perms
	tok, err := uc.Encode(s.jit)
	if err != nil {
		b.Fatal(err)
	}
	return []nats.Option{nats.UserJWTAndSeed(tok, string(seed)), nats.CustomInboxPrefix(inbox)}
}

func issuedOptions(b *testing.B, s *Store, p Principal) []nats.Option {
	b.Helper()
	var is Issued
	var err error
	if p.IsClient() {
		is, err = s.Issue(p, Scope{})
	} else {
		is, err = s.Ephemeral(p)
	}
	if err != nil {
		b.Fatal(err)
	}
	o, err := is.Options()
	if err != nil {
		b.Fatal(err)
	}
	return o
}

// explicitReplies are the requester's permissions with the reply
// permission replaced by an explicit allowance of the services' account's
// reply subjects (what a service import's response goes to).
func explicitReplies() jwt.Permissions {
	p, _ := ServicePermissions(ServiceRequester)
	p.Resp = nil
	p.Pub.Allow.Add("_R_.>")
	return p
}

func BenchmarkIsolationCost(b *testing.B) {
	type side struct {
		name      string
		store     bool
		responder func(b *testing.B, s *Store) []nats.Option
	}
	sides := []side{
		{"noauth", false, nil},
		{"isolated", true, func(b *testing.B, s *Store) []nats.Option { return issuedOptions(b, s, Service(ServiceRequester)) }},
		{"isolated-explicit-replies", true, func(b *testing.B, s *Store) []nats.Option {
			return userWith(b, s, explicitReplies(), Service(ServiceRequester).InboxPrefix())
		}},
	}
	for _, sd := range sides {
		b.Run("api-round-trip/"+sd.name, func(b *testing.B) {
			var s *Store
			if sd.store {
				var err error
				if s, err = OpenStore(b.TempDir()); err != nil {
					b.Fatal(err)
				}
			}
			var agentOpts, respOpts []nats.Option
			if s != nil {
				agentOpts = issuedOptions(b, s, Principal{Kind: KindAgent, ID: "bench"})
				respOpts = sd.responder(b, s)
			}
			srv := costServer(b, s)
			resp := costConnect(b, srv, respOpts...)
			if _, err := resp.Subscribe("jitapi.request", func(m *nats.Msg) { _ = m.Respond([]byte(`{"status":"accepted"}`)) }); err != nil {
				b.Fatal(err)
			}
			if err := resp.Flush(); err != nil {
				b.Fatal(err)
			}
			agent := costConnect(b, srv, agentOpts...)
			body := []byte(`{"request_id":"req_bench","agent":"bench","permissions":["data:write"],"duration":"1m","reason":"bench"}`)
			b.ReportAllocs()
			for b.Loop() {
				if _, err := agent.Request("jitapi.request", body, 5*time.Second); err != nil {
					b.Fatal(err)
				}
			}
		})
		b.Run("consume-and-ack/"+sd.name, func(b *testing.B) {
			var s *Store
			if sd.store {
				var err error
				if s, err = OpenStore(b.TempDir()); err != nil {
					b.Fatal(err)
				}
			}
			var pubOpts, respOpts []nats.Option
			if s != nil {
				pubOpts = issuedOptions(b, s, Principal{Kind: KindAdmin, ID: "admin"})
				respOpts = sd.responder(b, s)
			}
			srv := costServer(b, s)
			ctx := context.Background()
			pnc := costConnect(b, srv, pubOpts...)
			pjs, _ := jetstream.New(pnc)
			if _, err := pjs.CreateStream(ctx, jetstream.StreamConfig{Name: streamAudit, Subjects: []string{"jit.>"}}); err != nil {
				b.Fatal(err)
			}
			cnc := costConnect(b, srv, respOpts...)
			cjs, _ := jetstream.New(cnc)
			cons, err := cjs.CreateOrUpdateConsumer(ctx, streamAudit, jetstream.ConsumerConfig{Durable: "requester-bench", AckPolicy: jetstream.AckExplicitPolicy})
			if err != nil {
				b.Fatal(err)
			}
			n := b.N
			for i := range n {
				if _, err := pjs.PublishAsync("jit.requested.bench", []byte(`{}`)); err != nil {
					b.Fatal(err, i)
				}
			}
			<-pjs.PublishAsyncComplete()
			b.ReportAllocs()
			b.ResetTimer()
			msgs, err := cons.Messages()
			if err != nil {
				b.Fatal(err)
			}
			defer msgs.Stop()
			for range n {
				m, err := msgs.Next()
				if err != nil {
					b.Fatal(err)
				}
				if err := m.Ack(); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
