// Package metricstest scrapes a /metrics endpoint the way Prometheus does
// and reads series from it, for tests.
package metricstest

import (
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"testing"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	"github.com/stretchr/testify/require"
)

// Families are the metric families of one scrape, by name.
type Families map[string]*dto.MetricFamily

// Parse reads the Prometheus text format.
func Parse(r io.Reader) (Families, error) {
	p := expfmt.NewTextParser(model.UTF8Validation)
	return p.TextToMetricFamilies(r)
}

// Scrape GETs url (an http:// URL) and parses the answer.
func Scrape(t testing.TB, url string) Families {
	t.Helper()
	resp, err := http.Get(url)
	require.NoError(t, err)
	defer resp.Body.Close()
	require.Equal(t, http.StatusOK, resp.StatusCode)
	f, err := Parse(resp.Body)
	require.NoError(t, err, "the answer is the Prometheus text format")
	return f
}

// ScrapeHandler serves one GET /metrics from h and parses it.
func ScrapeHandler(t testing.TB, h http.Handler) Families {
	t.Helper()
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/metrics", nil))
	require.Equal(t, http.StatusOK, rec.Code)
	f, err := Parse(rec.Body)
	require.NoError(t, err, "the answer is the Prometheus text format")
	return f
}

// Value is the value of the series name whose labels include every
// name=value pair of labels (counter, gauge or untyped; for a histogram, its
// sample count), and whether there is one. More than one matching series is
// an error of the test.
func (f Families) Value(name string, labels ...string) (float64, bool) {
	mf, ok := f[name]
	if !ok {
		return 0, false
	}
	var (
		v     float64
		found int
	)
	for _, m := range mf.GetMetric() {
		if !match(m, labels) {
			continue
		}
		found++
		switch {
		case m.Counter != nil:
			v = m.Counter.GetValue()
		case m.Gauge != nil:
			v = m.Gauge.GetValue()
		case m.Histogram != nil:
			v = float64(m.Histogram.GetSampleCount())
		case m.Untyped != nil:
			v = m.Untyped.GetValue()
		}
	}
	if found > 1 {
		panic(fmt.Sprintf("%s%v matches %d series", name, labels, found))
	}
	return v, found == 1
}

// Sum adds the values of every series of name whose labels include labels.
func (f Families) Sum(name string, labels ...string) float64 {
	mf, ok := f[name]
	if !ok {
		return 0
	}
	var sum float64
	for _, m := range mf.GetMetric() {
		if !match(m, labels) {
			continue
		}
		switch {
		case m.Counter != nil:
			sum += m.Counter.GetValue()
		case m.Gauge != nil:
			sum += m.Gauge.GetValue()
		case m.Histogram != nil:
			sum += float64(m.Histogram.GetSampleCount())
		}
	}
	return sum
}

func match(m *dto.Metric, labels []string) bool {
	have := map[string]string{}
	for _, l := range m.GetLabel() {
		have[l.GetName()] = l.GetValue()
	}
	for i := 0; i+1 < len(labels); i += 2 {
		if have[labels[i]] != labels[i+1] {
			return false
		}
	}
	return true
}
