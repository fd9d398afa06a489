package web

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"sync/atomic"
	"time"

	"github.com/agentjit/jit/pkg/service"
	"github.com/agentjit/jit/services/approval"
)

// Served is an approval service with its console and HTTP API on a
// listener of their own: what the approval binary runs when
// JIT_HTTP_LISTEN is set. It is a service.Service. (jitd serves Handler
// beside its own routes instead.)
type Served struct {
	core *approval.Service
	d    service.Deps
	addr string
	opts []Option

	console *Console
	srv     *http.Server
	bound   atomic.Pointer[string]
}

// Serve returns core with its console on addr ("127.0.0.1:8080"; port 0
// picks one, see Addr), built with d (core's dependencies) and opts.
// Nothing runs until Start.
func Serve(core *approval.Service, d service.Deps, addr string, opts ...Option) *Served {
	return &Served{core: core, d: d, addr: addr, opts: opts}
}

// Start starts the service, then listens on addr and serves the console
// there; it returns once both run. A listener that cannot open stops the
// service again and is returned. Like the service, it starts once.
func (s *Served) Start(ctx context.Context) error {
	if err := s.core.Start(ctx); err != nil {
		return err
	}
	ln, err := net.Listen("tcp", s.addr)
	if err != nil {
		s.core.Stop()
		return fmt.Errorf("http listen %s: %w", s.addr, err)
	}
	addr := ln.Addr().String()
	s.bound.Store(&addr)
	s.core.SetPublicAddr(addr)
	s.console = New(s.core, s.d, s.opts...)
	s.srv = &http.Server{Handler: s.console.Handler(), ReadHeaderTimeout: 5 * time.Second, IdleTimeout: 2 * time.Minute}
	s.srv.RegisterOnShutdown(s.console.CloseStreams)
	srv, log := s.srv, s.console.log
	go func() {
		if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			log.Error().Err(err).Msg("http")
		}
	}()
	log.Info().Str("http", addr).Msg("approver console and HTTP API listening")
	return nil
}

// Addr is the address the console is served on, once started; "" before.
func (s *Served) Addr() string {
	if a := s.bound.Load(); a != nil {
		return *a
	}
	return ""
}

// Stop shuts the listener down (the console's calls in flight finish, its
// live streams end), closes the console, then stops the service. It is
// safe to call more than once.
func (s *Served) Stop() {
	if s.srv != nil {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		if err := s.srv.Shutdown(ctx); err != nil {
			s.console.log.Warn().Err(err).Msg("stop http")
		}
		cancel()
		s.console.Close()
	}
	s.core.Stop()
}
