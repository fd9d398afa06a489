package allinone

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"net"
	"path/filepath"
	"strings"
	"testing"

	"github.com/agentjit/jit/pkg/embedded"
	"github.com/agentjit/jit/pkg/natstest"
	"github.com/rs/zerolog"
	"github.com/stretchr/testify/require"
)

func exampleConfig(t *testing.T) string {
	p, err := filepath.Abs("../../../examples/jit.yaml")
	require.NoError(t, err)
	return p
}

// TestRunFailsAtOnceOnBusyNATSPort: another process on the NATS address
// makes Run fail with an error naming the address and saying it is in use
// (the probe's ErrAddrInUse, not the server's readiness time-out).
func TestRunFailsAtOnceOnBusyNATSPort(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	defer ln.Close()
	addr := ln.Addr().String()

	app := New(Options{ConfigFile: exampleConfig(t), DataDir: t.TempDir(), NATSListen: addr}, zerolog.New(zerolog.NewTestWriter(t)))
	err = app.Run(context.Background())
	require.Error(t, err)
	require.True(t, errors.Is(err, embedded.ErrAddrInUse), "%v", err)
	require.Contains(t, err.Error(), addr)
	require.Contains(t, err.Error(), "already in use")
	require.NotContains(t, err.Error(), "did not")
}

// TestLogLinesNameTheirServiceOnce: every line jitd logs carries the
// "service" key exactly once, naming jitd or one of the four services.
func TestLogLinesNameTheirServiceOnce(t *testing.T) {
	var out natstest.LockedBuffer
	app := New(Options{ConfigFile: exampleConfig(t), DataDir: t.TempDir(), NATSListen: "127.0.0.1:-1", HTTPListen: "127.0.0.1:0"},
		zerolog.New(&out).Level(zerolog.DebugLevel).With().Timestamp().Logger())
	require.NoError(t, app.Run(context.Background()))
	app.Close()

	seen := map[string]bool{}
	sc := bufio.NewScanner(strings.NewReader(out.String()))
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		keys, values := topLevelKeys(t, sc.Bytes())
		require.Equal(t, 1, keys["service"], "line %s", sc.Text())
		seen[values["service"]] = true
	}
	for _, name := range []string{"jitd", "revoker", "approval", "policy", "requester"} {
		require.True(t, seen[name], "no line of %s in\n%s", name, out.String())
	}
}

// topLevelKeys counts the keys of a JSON object line (encoding/json would
// keep only the last of duplicate keys) and returns the string values.
func topLevelKeys(t *testing.T, line []byte) (map[string]int, map[string]string) {
	t.Helper()
	dec := json.NewDecoder(bytes.NewReader(line))
	tok, err := dec.Token()
	require.NoError(t, err, "%s", line)
	require.Equal(t, json.Delim('{'), tok, "%s", line)
	keys, values := map[string]int{}, map[string]string{}
	for dec.More() {
		k, err := dec.Token()
		require.NoError(t, err, "%s", line)
		var v json.RawMessage
		require.NoError(t, dec.Decode(&v), "%s", line)
		keys[k.(string)]++
		var s string
		if json.Unmarshal(v, &s) == nil {
			values[k.(string)] = s
		}
	}
	return keys, values
}
