package events

import (
	"bytes"
	"encoding/json"
	"testing"
	"unicode/utf8"

	"github.com/stretchr/testify/require"
)

// stdStrict is how DataAs decoded before it used jsoniter.
func stdStrict[T any](data []byte) (T, bool) {
	var v T
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	if dec.Decode(&v) != nil || dec.More() {
		return v, false
	}
	return v, true
}

func agrees[T any](t *testing.T, data []byte) {
	if !utf8.Valid(data) || !json.Valid(data) {
		return // the slow path: encoding/json alone
	}
	var fast T
	if strictJSON.Unmarshal(data, &fast) != nil {
		return // DataAs asks encoding/json again: its verdict stands
	}
	slow, ok := stdStrict[T](data)
	require.True(t, ok, "jsoniter accepted what encoding/json refuses: %q", data)
	require.Equal(t, slow, fast, "%q", data)
}

// FuzzDataAsAgrees: whatever DataAs's fast path accepts, encoding/json
// accepts too, with the same result.
func FuzzDataAsAgrees(f *testing.F) {
	for _, s := range []string{
		`{"request_id":"req_1","agent":"a","permissions":["data:write"],"duration_ms":60000,"reason":"r","context":{"k":"v"},"requested_by":{"kind":"agent","id":"a"},"requested_at":"2026-01-02T03:04:05Z"}`,
		`{"agent":"a","rule":"price-floor","detail":"SKU","fired_at":"2026-01-02T03:04:05.123Z"}`,
		`{"request_id":"r","agent":"a","outcome":"approved","mode":"auto-approve","reason":"x","permissions":["p"],"duration_ms":1,"risk":{"score":3,"parts":[{"name":"n","points":3,"detail":"d"}]},"decided_by":{"kind":"system","id":"policy"},"decided_at":"2026-01-02T03:04:05Z","request":{}}`,
		`{"AGENT":"a"}`, `{"agent":"a","agent":"b"}`, `{"duration_ms":1.5}`, `{"duration_ms":1e3}`, `{"reason":"\ud800"}`,
		`{"permissions":null}`, `{"context":{"a":null}}`, `{"risk":null}`, `{"agent":"a\u0000"}`, "{\"reason\":\"\xff\"}",
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		agrees[Request](t, data)
		agrees[Decision](t, data)
		agrees[GuardrailFired](t, data)
		agrees[Grant](t, data)
	})
}
