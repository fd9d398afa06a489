package audit_test

import (
	"bytes"
	"crypto/ed25519"
	"crypto/rand"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/agentjit/jit/pkg/audit"
	"github.com/agentjit/jit/pkg/events"
	"github.com/stretchr/testify/require"
)

// stream simulates the audit stream with a signer: events are stored with
// increasing sequences, and a checkpoint is stored after every `every`
// events, as the auditor does.
type stream struct {
	t     testing.TB
	key   ed25519.PrivateKey
	chain *audit.Chain
	recs  []audit.Record
	seq   uint64
	clock time.Time
}

func newStream(t testing.TB, key ed25519.PrivateKey) *stream {
	return &stream{t: t, key: key, chain: audit.NewChain("JIT_AUDIT", 1, audit.Hash{}),
		clock: time.Date(2026, 11, 27, 15, 0, 0, 0, time.UTC)}
}

func (s *stream) store(subject string, header map[string][]string, body []byte) audit.Record {
	s.clock = s.clock.Add(time.Millisecond)
	s.seq++
	r := audit.Record{Seq: s.seq, Time: s.clock, Subject: subject, Header: header, Body: body}
	s.recs = append(s.recs, r)
	require.NoError(s.t, s.chain.Add(r.Seq, r.Hash(), r.Time, subject == audit.CheckpointSubject))
	return r
}

func (s *stream) event(i int) {
	id := fmt.Sprintf("grd-%d", i)
	e, err := events.New(id, events.TypeGuardrailFired, "test", "agent-1",
		events.GuardrailFired{Agent: "agent-1", Rule: "r", Detail: fmt.Sprint(i), FiredAt: s.clock}, events.WithTime(s.clock))
	require.NoError(s.t, err)
	body, err := events.Encode(e)
	require.NoError(s.t, err)
	s.store("guardrail.fired.agent-1", map[string][]string{"Content-Type": {events.ContentType}, "Nats-Msg-Id": {id}}, body)
}

// checkpoint stores the checkpoints of everything pending.
func (s *stream) checkpoint() {
	for s.chain.NeedsCheckpoint() {
		cp, n := s.chain.Peek()
		audit.Sign(&cp, s.key)
		e, err := events.New(audit.CheckpointEventID(cp.Stream, cp.FirstSeq, cp.LastSeq), events.TypeCheckpoint, "auditor", "", cp,
			events.WithTime(cp.CoveredUntil))
		require.NoError(s.t, err)
		body, err := events.Encode(e)
		require.NoError(s.t, err)
		s.chain.Commit(n)
		s.store(audit.CheckpointSubject, map[string][]string{"Content-Type": {events.ContentType}, "Nats-Msg-Id": {e.ID()}}, body)
	}
}

// trail makes n events with a checkpoint after every `every` of them and
// one at the end.
func trail(t testing.TB, key ed25519.PrivateKey, n, every int) []audit.Record {
	s := newStream(t, key)
	for i := range n {
		s.event(i)
		if (i+1)%every == 0 {
			s.checkpoint()
		}
	}
	s.checkpoint()
	return s.recs
}

func newKey(t testing.TB) ed25519.PrivateKey {
	_, k, err := ed25519.GenerateKey(rand.Reader)
	require.NoError(t, err)
	return k
}

func verify(keys audit.Keys, recs []audit.Record) audit.Result {
	v := audit.NewVerifier(keys)
	for _, r := range recs {
		v.Add(r)
	}
	return v.Result()
}

func pubOf(k ed25519.PrivateKey) ed25519.PublicKey { return k.Public().(ed25519.PublicKey) }

func TestVerifyWholeTrail(t *testing.T) {
	key := newKey(t)
	recs := trail(t, key, 50, 10)
	res := verify(audit.NewKeys(pubOf(key)), recs)
	require.True(t, res.OK(), "%+v", res.Findings)
	require.Equal(t, len(recs), res.Records)
	require.Equal(t, 5, res.Checkpoints, "one after every 10 events; none for a checkpoint alone")
	require.Equal(t, len(recs)-1, res.Verified, "all but the last checkpoint, which nothing covers yet")
	require.Equal(t, 1, res.Uncovered)
	require.Equal(t, []string{audit.KeyID(pubOf(key))}, res.KeyIDs)

	t.Run("from the middle (a --since window)", func(t *testing.T) {
		res := verify(audit.NewKeys(pubOf(key)), recs[25:])
		require.True(t, res.OK(), "%+v", res.Findings)
	})
	t.Run("an empty trail", func(t *testing.T) {
		require.True(t, verify(audit.NewKeys(pubOf(key)), nil).OK())
	})
	t.Run("no checkpoint is not whole", func(t *testing.T) {
		res := verify(audit.NewKeys(pubOf(key)), recs[:5])
		require.False(t, res.OK())
		require.Empty(t, res.Findings)
	})
}

// TestVerifyNamesTheFirstTampering tampers with a copy of a trail in each
// of the four ways and expects the finding to name the message.
func TestVerifyNamesTheFirstTampering(t *testing.T) {
	key := newKey(t)
	keys := audit.NewKeys(pubOf(key))
	recs := trail(t, key, 40, 10)
	// Sequences 1-10 are events, 11 a checkpoint, 12-21 events, …
	clone := func() []audit.Record { return append([]audit.Record(nil), recs...) }
	at := func(seq uint64) int {
		for i, r := range recs {
			if r.Seq == seq {
				return i
			}
		}
		t.Fatalf("no seq %d", seq)
		return -1
	}
	first := func(t *testing.T, recs []audit.Record) audit.Finding {
		t.Helper()
		res := verify(keys, recs)
		require.False(t, res.OK())
		require.NotEmpty(t, res.Findings)
		t.Logf("%s seq %d: %s", res.Findings[0].Kind, res.Findings[0].Seq, res.Findings[0].Detail)
		return res.Findings[0]
	}

	t.Run("deleted from a live stream (a hole in the sequences)", func(t *testing.T) {
		c := clone()
		i := at(15)
		c = append(c[:i], c[i+1:]...)
		f := first(t, c)
		require.Equal(t, audit.Deleted, f.Kind)
		require.Equal(t, uint64(15), f.Seq)
		require.Equal(t, uint64(22), f.CheckpointSeq)
		require.Contains(t, f.Detail, "after seq 14 (guardrail.fired grd-12)")
		require.Contains(t, f.Detail, "before seq 16 (guardrail.fired grd-14)")
	})
	t.Run("deleted from a copy, later sequences renumbered", func(t *testing.T) {
		c := clone()
		i := at(15)
		c = append(c[:i], c[i+1:]...)
		for k := i; k < len(c); k++ {
			c[k].Seq--
		}
		f := first(t, c)
		require.Equal(t, audit.Deleted, f.Kind)
		require.Equal(t, uint64(15), f.Seq)
	})
	t.Run("deleted checkpoint", func(t *testing.T) {
		c := clone()
		i := at(22)
		c = append(c[:i], c[i+1:]...)
		f := first(t, c)
		require.Equal(t, audit.Deleted, f.Kind)
		require.Equal(t, uint64(22), f.Seq)
	})
	t.Run("altered", func(t *testing.T) {
		c := clone()
		i := at(27)
		c[i].Body = bytes.Replace(c[i].Body, []byte(`"rule":"r"`), []byte(`"rule":"x"`), 1)
		f := first(t, c)
		require.Equal(t, audit.Altered, f.Kind)
		require.Equal(t, uint64(27), f.Seq)
		require.Equal(t, "grd-24", f.EventID)
	})
	t.Run("altered header", func(t *testing.T) {
		c := clone()
		i := at(3)
		c[i].Header = map[string][]string{"Content-Type": {events.ContentType}, "Nats-Msg-Id": {"other"}}
		f := first(t, c)
		require.Equal(t, audit.Altered, f.Kind)
		require.Equal(t, uint64(3), f.Seq)
	})
	t.Run("inserted", func(t *testing.T) {
		c := clone()
		i := at(30)
		forged := c[i]
		forged.Body = bytes.Replace(forged.Body, []byte(`grd-27`), []byte(`grd-forged`), -1)
		c = append(c[:i], append([]audit.Record{forged}, c[i:]...)...)
		for k := i + 1; k < len(c); k++ {
			c[k].Seq++
		}
		f := first(t, c)
		require.Equal(t, audit.Inserted, f.Kind)
		require.Equal(t, "grd-forged", f.EventID)
		require.Equal(t, i+1, f.Position)
	})
	t.Run("inserted with a sequence of its own", func(t *testing.T) {
		c := clone()
		i := at(5)
		forged := c[i]
		forged.Header = map[string][]string{"Nats-Msg-Id": {"x"}}
		c = append(c[:i+1], append([]audit.Record{forged}, c[i+1:]...)...)
		f := first(t, c)
		require.Equal(t, audit.Inserted, f.Kind)
		require.Equal(t, uint64(5), f.Seq)
		require.Equal(t, i+2, f.Position)
	})
	t.Run("reordered", func(t *testing.T) {
		c := clone()
		i := at(34)
		c[i], c[i+1] = c[i+1], c[i]
		f := first(t, c)
		require.Equal(t, audit.Reordered, f.Kind)
		require.Equal(t, uint64(35), f.Seq, "seq 35 comes too early")
		require.Contains(t, f.Detail, "before seq 34")
	})
	t.Run("the first of two", func(t *testing.T) {
		c := clone()
		c[at(30)].Body = append([]byte(nil), c[at(31)].Body...)
		i := at(8)
		c = append(c[:i], c[i+1:]...)
		res := verify(keys, c)
		require.Len(t, res.Findings, 2)
		require.Equal(t, uint64(8), res.Findings[0].Seq)
		require.Equal(t, uint64(30), res.Findings[1].Seq)
	})
	t.Run("a checkpoint signed by another key", func(t *testing.T) {
		res := verify(audit.NewKeys(pubOf(newKey(t))), recs)
		require.False(t, res.OK())
		require.Equal(t, audit.Unverifiable, res.Findings[0].Kind)
		require.Equal(t, uint64(11), res.Findings[0].Seq)
	})
	t.Run("a removed checkpoint and an altered event it covered", func(t *testing.T) {
		c := clone()
		c[at(13)].Body = bytes.Replace(c[at(13)].Body, []byte(`"rule":"r"`), []byte(`"rule":"y"`), 1)
		i := at(22)
		c = append(c[:i], c[i+1:]...)
		// And the hole it leaves closed up, so that only the chain tells.
		for k := i; k < len(c); k++ {
			c[k].Seq--
		}
		f := first(t, c)
		require.Contains(t, []string{audit.Unchained, audit.Deleted, audit.Altered}, f.Kind)
		require.LessOrEqual(t, f.Seq, uint64(22))
	})
}

// TestChainResumes: a chain started again from a checkpoint (a signer's
// restart) makes checkpoints that verify with the ones before.
func TestChainResumes(t *testing.T) {
	key := newKey(t)
	s := newStream(t, key)
	for i := range 7 {
		s.event(i)
	}
	s.checkpoint()
	cp, err := audit.Check(lastCheckpoint(t, s.recs))
	require.NoError(t, err)
	// A new signer resumes from the stored checkpoint; the checkpoint's own
	// message comes next.
	s.chain = audit.NewChain("JIT_AUDIT", cp.LastSeq+1, cp.Chain)
	require.NoError(t, s.chain.Add(s.recs[len(s.recs)-1].Seq, s.recs[len(s.recs)-1].Hash(), s.recs[len(s.recs)-1].Time, true))
	require.False(t, s.chain.NeedsCheckpoint(), "only a checkpoint: no new checkpoint for it alone")
	for i := 7; i < 12; i++ {
		s.event(i)
	}
	s.checkpoint()
	res := verify(audit.NewKeys(pubOf(key)), s.recs)
	require.True(t, res.OK(), "%+v", res.Findings)
	require.Equal(t, 2, res.Checkpoints)

	// Resuming from a wrong chain value is found.
	s2 := newStream(t, key)
	for i := range 3 {
		s2.event(i)
	}
	s2.checkpoint()
	last := s2.recs[len(s2.recs)-1]
	s2.chain = audit.NewChain("JIT_AUDIT", last.Seq, audit.Hash{1})
	require.NoError(t, s2.chain.Add(last.Seq, last.Hash(), last.Time, true))
	s2.event(3)
	s2.checkpoint()
	res = verify(audit.NewKeys(pubOf(key)), s2.recs)
	require.False(t, res.OK())
	require.Equal(t, audit.Unchained, res.Findings[0].Kind)
}

func lastCheckpoint(t *testing.T, recs []audit.Record) events.Checkpoint {
	t.Helper()
	for i := len(recs) - 1; i >= 0; i-- {
		if recs[i].Subject == audit.CheckpointSubject {
			e, err := events.Decode(recs[i].Body)
			require.NoError(t, err)
			c, err := events.DataAs[events.Checkpoint](e)
			require.NoError(t, err)
			return c
		}
	}
	t.Fatal("no checkpoint")
	return events.Checkpoint{}
}

// TestSkippedSequences: a sequence that was gone when the signer read the
// stream is in the checkpoint, and verify reports it.
func TestSkippedSequences(t *testing.T) {
	key := newKey(t)
	s := newStream(t, key)
	s.event(0)
	s.event(1)
	// Sequence 3 is deleted before the signer reads it.
	s.seq++
	s.store("jit.x.a", nil, []byte("not an event"))
	s.checkpoint()
	c := lastCheckpoint(t, s.recs)
	require.Equal(t, []events.SeqRange{{First: 3, Last: 3}}, c.Skipped)
	require.Equal(t, 3, c.Count)
	res := verify(audit.NewKeys(pubOf(key)), s.recs)
	require.True(t, res.OK(), "a hole the checkpoint records is what was there when it was signed: %+v", res.Findings)
}

func TestCheckRefusesInconsistentCheckpoints(t *testing.T) {
	key := newKey(t)
	good := lastCheckpoint(t, trail(t, key, 3, 10))
	_, err := audit.Check(good)
	require.NoError(t, err)
	for name, mutate := range map[string]func(c *events.Checkpoint){
		"count":        func(c *events.Checkpoint) { c.Count++ },
		"range":        func(c *events.Checkpoint) { c.LastSeq = c.FirstSeq - 1 },
		"chain":        func(c *events.Checkpoint) { c.Chain = strings.Repeat("0", 64) },
		"hashes":       func(c *events.Checkpoint) { c.Hashes = c.Hashes[4:] },
		"skipped":      func(c *events.Checkpoint) { c.Skipped = []events.SeqRange{{First: 9, Last: 2}} },
		"huge":         func(c *events.Checkpoint) { c.LastSeq = 1 << 62 },
		"zero first":   func(c *events.Checkpoint) { c.FirstSeq = 0 },
		"short prev":   func(c *events.Checkpoint) { c.PrevChain = "00" },
		"many skipped": func(c *events.Checkpoint) { c.Skipped = make([]events.SeqRange, 2000) },
	} {
		c := good
		mutate(&c)
		_, err := audit.Check(c)
		require.ErrorIs(t, err, audit.ErrBadCheckpoint, name)
	}
	// A signature over other content does not verify.
	c := good
	c.CoveredUntil = c.CoveredUntil.Add(time.Second)
	require.ErrorIs(t, audit.NewKeys(pubOf(key)).Verify(c), audit.ErrBadSignature)
	require.NoError(t, audit.NewKeys(pubOf(key)).Verify(good))
	require.ErrorIs(t, audit.NewKeys().Verify(good), audit.ErrUnknownKey)
}

func TestCheckpointIsDeterministic(t *testing.T) {
	key := newKey(t)
	a, b := trail(t, key, 12, 5), trail(t, key, 12, 5)
	require.Equal(t, a, b, "the same stream and key give the same checkpoints, byte for byte")
	require.True(t, bytes.Contains(a[5].Body, []byte(`"id":"checkpoint/JIT_AUDIT/1-5"`)), "%s", a[5].Body)
}

func TestExportRecordRoundTrip(t *testing.T) {
	recs := trail(t, newKey(t), 3, 10)
	recs = append(recs, audit.Record{Seq: 99, Time: time.Now(), Subject: "jit.x.y", Body: []byte{0xff, 0x00, '<'}})
	var buf bytes.Buffer
	for _, r := range recs {
		line, err := audit.MarshalRecord(r)
		require.NoError(t, err)
		buf.Write(line)
		buf.WriteByte('\n')
	}
	require.Contains(t, buf.String(), `"body_base64":"/wA8"`)
	var got []audit.Record
	require.NoError(t, audit.ReadRecords(&buf, func(r audit.Record) error { got = append(got, r); return nil }))
	require.Len(t, got, len(recs))
	for i := range recs {
		require.Equal(t, recs[i].Hash(), got[i].Hash(), "record %d is exact", i)
		require.Equal(t, recs[i].Seq, got[i].Seq)
		require.True(t, recs[i].Time.Equal(got[i].Time))
	}
	for _, bad := range []string{
		`{}`, `{"seq":1,"subject":"a"}`, `{"seq":1,"subject":"a","body":"x","body_base64":"eA=="}`,
		`{"seq":1,"subject":"a","body":"x","extra":1}`, `{"seq":1,"subject":"a","body":"x"} {}`, `[1]`,
		`{"seq":0,"subject":"a","body":"x"}`, `{"seq":1,"subject":"a b","body":"x"}`, `{"seq":1,"subject":"a","body_base64":"!"}`,
	} {
		_, err := audit.DecodeRecord([]byte(bad))
		require.ErrorIs(t, err, audit.ErrBadRecord, bad)
	}
	err := audit.ReadRecords(strings.NewReader("\n"+`{"seq":1,"subject":"a","body":"x"}`+"\nnope\n"), func(audit.Record) error { return nil })
	require.ErrorContains(t, err, "line 3")
}

func TestKeys(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "keys", "audit-ed25519.key")
	key, created, err := audit.LoadOrCreateKey(path)
	require.NoError(t, err)
	require.True(t, created)
	st, err := os.Stat(path)
	require.NoError(t, err)
	require.Equal(t, os.FileMode(0o600), st.Mode().Perm())
	again, created, err := audit.LoadOrCreateKey(path)
	require.NoError(t, err)
	require.False(t, created, "kept")
	require.True(t, key.Equal(again))

	pubFile := filepath.Join(dir, "keys", "audit-ed25519.pub")
	keys, err := audit.LoadKeys(pubFile, path)
	require.NoError(t, err)
	require.Len(t, keys, 1, "the .pub file and the key itself name the same key")
	pub := pubOf(key)
	for _, form := range []string{audit.PublicKeyText(pub), fmt.Sprintf("%x", []byte(pub)), string(audit.PublicKeyPEM(pub))} {
		got, err := audit.ParsePublicKey([]byte(form + "\n"))
		require.NoError(t, err)
		require.True(t, pub.Equal(got))
	}
	_, err = audit.ParsePublicKey([]byte("nope"))
	require.Error(t, err)
}
