package allinone

import (
	"context"
	"encoding/json"
	"os"
	"regexp"
	"strings"
	"testing"

	"github.com/agentjit/jit/pkg/metrics"
	"github.com/agentjit/jit/pkg/metrics/metricstest"
	"github.com/rs/zerolog"
	"github.com/stretchr/testify/require"
	"go.yaml.in/yaml/v3"
)

// TestDashboardNamesExportedMetrics: every query of every panel of the
// Grafana dashboard in deploy/ names only metrics the code exports (read
// from a running jitd's /metrics and the collectors it registers), and
// the Prometheus configuration scrapes jitd's /metrics.
func TestDashboardNamesExportedMetrics(t *testing.T) {
	app := New(Options{ConfigFile: exampleConfig(t), DataDir: t.TempDir(), NATSListen: "127.0.0.1:-1", HTTPListen: "127.0.0.1:0"},
		zerolog.New(zerolog.NewTestWriter(t)).Level(zerolog.WarnLevel))
	require.NoError(t, app.Run(context.Background()))
	t.Cleanup(app.Close)
	exported := map[string]bool{}
	for name := range metricstest.Scrape(t, "http://"+app.HTTPAddr()+"/metrics") {
		exported[name] = true
	}
	for _, name := range metrics.Names() {
		exported[name] = true
	}

	b, err := os.ReadFile("../../../deploy/grafana/jit-dashboard.json")
	require.NoError(t, err)
	var dash struct {
		Panels []struct {
			Title   string `json:"title"`
			Type    string `json:"type"`
			Targets []struct {
				Expr string `json:"expr"`
			} `json:"targets"`
		} `json:"panels"`
	}
	require.NoError(t, json.Unmarshal(b, &dash))
	ident := regexp.MustCompile(`\bjit_[a-z0-9_]+`)
	queries := 0
	for _, p := range dash.Panels {
		if p.Type == "row" {
			continue
		}
		require.NotEmpty(t, p.Targets, "panel %q has a query", p.Title)
		for _, tg := range p.Targets {
			names := ident.FindAllString(tg.Expr, -1)
			require.NotEmpty(t, names, "panel %q: %q names no jit_ metric", p.Title, tg.Expr)
			for _, n := range names {
				base := n
				for _, suffix := range []string{"_bucket", "_sum", "_count"} {
					if b, ok := strings.CutSuffix(n, suffix); ok && exported[b] {
						base = b
					}
				}
				require.True(t, exported[base], "panel %q: %s is not a metric the code exports", p.Title, n)
			}
			queries++
		}
	}
	require.GreaterOrEqual(t, queries, 10)

	pb, err := os.ReadFile("../../../deploy/prometheus.yml")
	require.NoError(t, err)
	var prom struct {
		ScrapeConfigs []struct {
			JobName     string `yaml:"job_name"`
			MetricsPath string `yaml:"metrics_path"`
		} `yaml:"scrape_configs"`
	}
	require.NoError(t, yaml.Unmarshal(pb, &prom))
	jobs := map[string]string{}
	for _, sc := range prom.ScrapeConfigs {
		jobs[sc.JobName] = sc.MetricsPath
	}
	require.Equal(t, "/metrics", jobs["jitd"])
	require.Equal(t, "/metrics", jobs["jit-services"])
}
