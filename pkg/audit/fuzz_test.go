package audit_test

import (
	"bytes"
	"crypto/ed25519"
	"encoding/json"
	"testing"

	"github.com/agentjit/jit/pkg/audit"
	"github.com/agentjit/jit/pkg/events"
	"github.com/stretchr/testify/require"
)

// seedKey is a fixed key, so that the fuzz seeds are the same every run.
var seedKey = ed25519.NewKeyFromSeed(bytes.Repeat([]byte{7}, ed25519.SeedSize))

func export(t testing.TB, recs []audit.Record) []byte {
	var buf bytes.Buffer
	for _, r := range recs {
		line, err := audit.MarshalRecord(r)
		require.NoError(t, err)
		buf.Write(line)
		buf.WriteByte('\n')
	}
	return buf.Bytes()
}

// FuzzDecodeRecord: an export line is untrusted input. Decoding never
// panics, and what decodes encodes back to a record with the same hash.
func FuzzDecodeRecord(f *testing.F) {
	for _, line := range bytes.Split(export(f, trail(f, seedKey, 3, 2)), []byte("\n")) {
		f.Add(line)
	}
	f.Fuzz(func(t *testing.T, line []byte) {
		r, err := audit.DecodeRecord(line)
		if err != nil {
			return
		}
		again, err := audit.MarshalRecord(r)
		require.NoError(t, err)
		r2, err := audit.DecodeRecord(again)
		require.NoError(t, err)
		require.Equal(t, r.Hash(), r2.Hash())
		require.Equal(t, r.Seq, r2.Seq)
	})
}

// FuzzVerify: verify reads an export anyone may have edited. It never
// panics, and an untouched trail stays whole.
func FuzzVerify(f *testing.F) {
	whole := export(f, trail(f, seedKey, 12, 4))
	f.Add(whole)
	lines := bytes.Split(whole, []byte("\n"))
	f.Add(bytes.Join(append(append([][]byte{}, lines[:3]...), lines[4:]...), []byte("\n")))
	f.Add(bytes.Join(append(append([][]byte{}, lines[1:]...), lines[0]), []byte("\n")))
	f.Add([]byte(`{"seq":1,"subject":"jit.checkpoint._system","body":"{\"specversion\":\"1.0\",\"id\":\"x\",\"source\":\"/s\",\"type\":\"jit.checkpoint\",\"data\":{\"first_seq\":1,\"last_seq\":18446744073709551615,\"count\":1}}"}`))
	keys := audit.NewKeys(seedKey.Public().(ed25519.PublicKey))
	f.Fuzz(func(t *testing.T, file []byte) {
		v := audit.NewVerifier(keys)
		_ = audit.ReadRecords(bytes.NewReader(file), func(r audit.Record) error {
			v.Add(r)
			return nil
		})
		res := v.Result()
		if bytes.Equal(file, whole) {
			require.True(t, res.OK())
		}
		for i := 1; i < len(res.Findings); i++ {
			require.LessOrEqual(t, res.Findings[i-1].Position, res.Findings[i].Position+1, "findings in input order")
		}
	})
}

// FuzzCheck: a checkpoint's data comes from the stream or from a file.
// Check never panics, never allocates beyond its bounds, and what it
// accepts folds to its chain.
func FuzzCheck(f *testing.F) {
	recs := trail(f, seedKey, 5, 3)
	for _, r := range recs {
		if r.Subject == audit.CheckpointSubject {
			e, err := events.Decode(r.Body)
			require.NoError(f, err)
			f.Add([]byte(e.Data()))
		}
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		var c events.Checkpoint
		if json.Unmarshal(data, &c) != nil {
			return
		}
		ch, err := audit.Check(c)
		if err != nil {
			return
		}
		require.Len(t, ch.Hashes, c.Count)
		require.Len(t, ch.Seqs, c.Count)
		require.Equal(t, ch.Chain, audit.Fold(ch.Prev, ch.Hashes))
		_ = audit.NewKeys(seedKey.Public().(ed25519.PublicKey)).Verify(c)
	})
}
