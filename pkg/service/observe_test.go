package service

import (
	"context"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"os"
	"testing"
	"time"

	"github.com/agentjit/jit/pkg/broker"
	"github.com/agentjit/jit/pkg/events"
	"github.com/agentjit/jit/pkg/metrics/metricstest"
	"github.com/agentjit/jit/pkg/natstest"
	"github.com/stretchr/testify/require"
)

// consumingService is the smallest service: one durable consumer.
type consumingService struct {
	d Deps
	c *broker.Consumer
}

func (s *consumingService) Start(ctx context.Context) error {
	c, err := broker.Consume(ctx, s.d.JS, broker.ConsumerConfig{Durable: "requester-probe", FilterSubjects: []string{"jit.requested.>"}},
		func(context.Context, events.Event, broker.Delivery) error { return nil }, nil, s.d.Log)
	s.c = c
	return err
}

func (s *consumingService) Stop() { s.c.Stop() }

func get(t *testing.T, url string) (int, string) {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		return 0, err.Error()
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// TestMetricsListen: a service binary's --metrics-listen serves /healthz
// at once, /readyz once it is connected with its configuration and
// consumers in place, and /metrics with its consumers' series; a consumer
// deleted from under it is made again, and one that cannot be makes
// /readyz fail, naming it.
func TestMetricsListen(t *testing.T) {
	env := natstest.Setup(t)
	yml, err := os.ReadFile("../../examples/jit.yaml")
	require.NoError(t, err)
	env.ApplyConfig(t, string(yml))
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	addr := ln.Addr().String()
	require.NoError(t, ln.Close())
	base := "http://" + addr

	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		done <- run(ctx, "requester", env.Server.ClientURL(), nil, PrepareOptions{Source: "requester"},
			func(d Deps) Service { return &consumingService{d: d} }, env.Log, addr)
	}()
	t.Cleanup(func() {
		cancel()
		require.NoError(t, <-done)
	})

	require.Eventually(t, func() bool { code, _ := get(t, base+"/healthz"); return code == http.StatusOK }, 10*time.Second, 10*time.Millisecond)
	require.Eventually(t, func() bool { code, _ := get(t, base+"/readyz"); return code == http.StatusOK }, 10*time.Second, 10*time.Millisecond)
	fam := metricstest.Scrape(t, base+"/metrics")
	up, ok := fam.Value("jit_consumer_up", "consumer", "requester-probe")
	require.True(t, ok)
	require.Equal(t, 1.0, up)
	_, ok = fam.Value("jit_config_revision")
	require.True(t, ok)
	_, ok = fam.Value("jit_build_info", "version", Version)
	require.True(t, ok)

	// Deleted from under the service: made again after a moment, and
	// ready again.
	recreated := func() float64 {
		v, _ := metricstest.Scrape(t, base+"/metrics").Value("jit_consumer_recreated_total", "consumer", "requester-probe")
		return v
	}
	before := recreated()
	require.NoError(t, env.JS.DeleteConsumer(ctx, broker.AuditStream, "requester-probe"))
	require.Eventually(t, func() bool {
		code, _ := get(t, base+"/readyz")
		return recreated() == before+1 && code == http.StatusOK
	}, 10*time.Second, 10*time.Millisecond)
	_, err = env.JS.Consumer(ctx, broker.AuditStream, "requester-probe")
	require.NoError(t, err)

	// One that cannot be made again (its stream is gone): not ready, and
	// the reason says which.
	require.NoError(t, env.JS.DeleteStream(ctx, broker.AuditStream))
	var r struct {
		Ready   bool     `json:"ready"`
		Reasons []string `json:"reasons"`
	}
	code, body := get(t, base+"/readyz")
	require.Equal(t, http.StatusServiceUnavailable, code)
	require.NoError(t, json.Unmarshal([]byte(body), &r))
	require.False(t, r.Ready)
	require.Contains(t, r.Reasons[0], "requester-probe")
	fam = metricstest.Scrape(t, base+"/metrics")
	up, _ = fam.Value("jit_consumer_up", "consumer", "requester-probe")
	require.Equal(t, 0.0, up)
}
