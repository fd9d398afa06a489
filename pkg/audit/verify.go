package audit

import (
	"cmp"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/agentjit/jit/pkg/events"
)

// Finding kinds, the ways a copy of the audit trail can differ from what
// the checkpoints sign.
const (
	// Deleted: a message a checkpoint lists is not there.
	Deleted = "deleted"
	// Altered: a message is there but its hash is not the one listed.
	Altered = "altered"
	// Inserted: a message is there that no checkpoint lists at that place.
	Inserted = "inserted"
	// Reordered: listed messages are there, in another order.
	Reordered = "reordered"
	// Unverifiable: a checkpoint that is malformed or not signed by any of
	// the keys given (forged, or signed by a key not passed to the verifier).
	Unverifiable = "unverifiable"
	// Unchained: messages that no surviving checkpoint lists (their
	// checkpoint was removed) do not continue the chain, or a checkpoint
	// does not continue the chain of the one before it.
	Unchained = "unchained"
)

// CheckpointSubject is the subject the auditor publishes checkpoints on.
var CheckpointSubject = events.Subject(events.TypeCheckpoint, "")

// Finding is one difference between the trail and its checkpoints.
type Finding struct {
	Kind string `json:"kind"`
	// Seq is the stream sequence of the message concerned: for Deleted, the
	// sequence the checkpoint lists for the missing message.
	Seq uint64 `json:"seq"`
	// Count is how many consecutive messages the finding covers (Deleted,
	// Inserted), at least 1.
	Count   int    `json:"count"`
	EventID string `json:"event_id,omitempty"`
	Type    string `json:"type,omitempty"`
	Subject string `json:"subject,omitempty"`
	// Position is the message's place in the input, from 1 (for Deleted, the
	// place of the message after the hole).
	Position int `json:"position"`
	// CheckpointSeq is the sequence of the checkpoint that shows it.
	CheckpointSeq uint64 `json:"checkpoint_seq,omitempty"`
	Detail        string `json:"detail"`
	order         int
}

// Result is what Verify found.
type Result struct {
	// Records is the number of messages read; FirstSeq and LastSeq their
	// sequence range.
	Records           int    `json:"records"`
	FirstSeq, LastSeq uint64 `json:"-"`
	// Checkpoints is the number of checkpoints signed by a given key.
	Checkpoints int `json:"checkpoints"`
	// Verified is the number of messages that checkpoints cover.
	Verified int `json:"verified"`
	// Uncovered is the number of messages after the last checkpoint's
	// range (not yet checkpointed; a truncation there cannot be seen), and
	// BeforeFirst those before the first checkpoint's range.
	Uncovered   int `json:"uncovered"`
	BeforeFirst int `json:"before_first"`
	// CoveredThrough is the last sequence a checkpoint covers, and
	// CoveredUntil the broker time of that message.
	CoveredThrough uint64    `json:"covered_through"`
	CoveredUntil   time.Time `json:"covered_until"`
	// KeyIDs are the keys that signed the checkpoints.
	KeyIDs []string `json:"key_ids"`
	// Findings, in input order: the first is the first place the copy
	// differs from what was signed.
	Findings []Finding `json:"findings"`
}

// OK reports a whole trail: no finding, and a checkpoint unless there is
// nothing to verify.
func (r Result) OK() bool { return len(r.Findings) == 0 && (r.Records == 0 || r.Checkpoints > 0) }

// Verifier checks a sequence of stream messages against the checkpoints
// among them. Add every record in the order read, then call Result. It
// keeps about 100 bytes per message in memory.
type Verifier struct {
	keys     Keys
	recs     []vrec
	cps      []vcp
	findings []Finding
}

type vrec struct {
	seq      uint64
	hash     Hash
	time     time.Time
	subject  string
	id, typ  string
	position int
}

type vcp struct {
	Checked
	rec int // index of its own message in recs
}

// NewVerifier returns a verifier that trusts checkpoints signed by keys.
func NewVerifier(keys Keys) *Verifier { return &Verifier{keys: keys} }

// Add takes the next message of the input.
func (v *Verifier) Add(r Record) {
	rec := vrec{seq: r.Seq, hash: r.Hash(), time: r.Time, subject: r.Subject, position: len(v.recs) + 1}
	rec.id, rec.typ = peekIDType(r.Header, r.Body)
	v.recs = append(v.recs, rec)
	if r.Subject != CheckpointSubject {
		return
	}
	e, err := decodeEvent(r.Header, r.Body)
	idx := len(v.recs) - 1
	refuse := func(why string) {
		v.findings = append(v.findings, Finding{Kind: Unverifiable, Seq: r.Seq, Count: 1, EventID: rec.id, Type: rec.typ,
			Subject: r.Subject, Position: rec.position, Detail: why, order: 2 * rec.position})
	}
	if err != nil {
		refuse(fmt.Sprintf("a message on %s that is not a valid checkpoint event: %v", r.Subject, err))
		return
	}
	c, err := events.DataAs[events.Checkpoint](e)
	if err != nil {
		refuse(fmt.Sprintf("checkpoint data unreadable: %v", err))
		return
	}
	if err := v.keys.Verify(c); err != nil {
		refuse(fmt.Sprintf("%v: forged, or signed by a key not given to verify (known: %s)", err, strings.Join(sorted(v.keys.IDs()), ", ")))
		return
	}
	ch, err := Check(c)
	if err != nil {
		refuse(fmt.Sprintf("a signed checkpoint whose fields do not fit together: %v", err))
		return
	}
	v.cps = append(v.cps, vcp{Checked: ch, rec: idx})
}

// Result compares the messages with the checkpoints. The verified window
// starts at the smallest sequence read: a checkpoint that began before it
// is checked for the messages inside it.
func (v *Verifier) Result() Result {
	res := Result{Records: len(v.recs), Checkpoints: len(v.cps)}
	findings := slices.Clone(v.findings)
	if len(v.recs) == 0 {
		res.Findings = findings
		return res
	}
	res.FirstSeq, res.LastSeq = v.recs[0].seq, v.recs[0].seq
	for _, r := range v.recs {
		res.FirstSeq, res.LastSeq = min(res.FirstSeq, r.seq), max(res.LastSeq, r.seq)
	}
	window := res.FirstSeq
	// Records by sequence, for range look-ups; ties keep input order.
	bySeq := make([]int, len(v.recs))
	for i := range bySeq {
		bySeq[i] = i
	}
	slices.SortStableFunc(bySeq, func(a, b int) int { return cmp.Compare(v.recs[a].seq, v.recs[b].seq) })
	cps := slices.Clone(v.cps)
	slices.SortStableFunc(cps, func(a, b vcp) int {
		return cmp.Or(cmp.Compare(a.FirstSeq, b.FirstSeq), cmp.Compare(a.LastSeq, b.LastSeq))
	})
	keyIDs := map[string]bool{}
	for _, c := range cps {
		keyIDs[c.KeyID] = true
		if f := v.compare(c, window, bySeq); f != nil {
			findings = append(findings, *f)
		}
	}
	findings = append(findings, v.continuity(cps, window, bySeq)...)
	for id := range keyIDs {
		res.KeyIDs = append(res.KeyIDs, id)
	}
	slices.Sort(res.KeyIDs)

	// Coverage: the union of the checkpoints' ranges.
	if len(cps) > 0 {
		lo, hi := cps[0].FirstSeq, uint64(0)
		for _, c := range cps {
			if c.LastSeq >= hi {
				hi, res.CoveredUntil = c.LastSeq, c.CoveredUntil
			}
		}
		res.CoveredThrough = hi
		for _, r := range v.recs {
			switch {
			case r.seq < lo:
				res.BeforeFirst++
			case r.seq > hi:
				res.Uncovered++
			default:
				res.Verified++
			}
		}
	}
	slices.SortStableFunc(findings, func(a, b Finding) int { return cmp.Compare(a.order, b.order) })
	res.Findings = findings
	return res
}

// inRange returns the indexes of the records with sequences lo..hi, in
// input order.
func (v *Verifier) inRange(lo, hi uint64, bySeq []int) []int {
	start, _ := slices.BinarySearchFunc(bySeq, lo, func(i int, s uint64) int { return cmp.Compare(v.recs[i].seq, s) })
	var out []int
	for _, i := range bySeq[start:] {
		if v.recs[i].seq > hi {
			break
		}
		out = append(out, i)
	}
	slices.Sort(out)
	return out
}

// compare matches the messages in c's range with c's list and returns the
// first difference.
func (v *Verifier) compare(c vcp, window uint64, bySeq []int) *Finding {
	lo := max(c.FirstSeq, window)
	var exp []int // indexes into c.Hashes
	for i, s := range c.Seqs {
		if s >= lo {
			exp = append(exp, i)
		}
	}
	act := v.inRange(lo, c.LastSeq, bySeq)
	cpRec := v.recs[c.rec]
	base := Finding{CheckpointSeq: cpRec.seq, Count: 1}
	at := func(f Finding, ri int) *Finding {
		r := v.recs[ri]
		f.Seq, f.EventID, f.Type, f.Subject, f.Position, f.order = r.seq, r.id, r.typ, r.subject, r.position, 2*r.position
		return &f
	}
	deleted := func(i, n, j int) *Finding {
		f := base
		f.Kind, f.Seq, f.Count = Deleted, c.Seqs[exp[i]], n
		var where []string
		if j > 0 {
			where = append(where, "after "+v.describe(act[j-1]))
		}
		if j < len(act) {
			where = append(where, "before "+v.describe(act[j]))
			f.Position, f.order = v.recs[act[j]].position, 2*v.recs[act[j]].position-1
		} else if j > 0 {
			f.Position, f.order = v.recs[act[j-1]].position+1, 2*v.recs[act[j-1]].position+1
		} else {
			f.Position, f.order = cpRec.position, 2*cpRec.position-1
		}
		what := fmt.Sprintf("seq %d (hash %s)", f.Seq, short(c.Hashes[exp[i]]))
		if n > 1 {
			what = fmt.Sprintf("%d messages, seq %d–%d,", n, f.Seq, c.Seqs[exp[i+n-1]])
		}
		f.Detail = fmt.Sprintf("%s is missing: the checkpoint at seq %d lists it %s", what, cpRec.seq, strings.Join(where, " and "))
		return &f
	}
	i, j := 0, 0
	for i < len(exp) && j < len(act) {
		eh, ah := c.Hashes[exp[i]], v.recs[act[j]].hash
		if eh == ah {
			i, j = i+1, j+1
			continue
		}
		aInE, eInA := -1, -1
		for k := i + 1; k < len(exp); k++ {
			if c.Hashes[exp[k]] == ah {
				aInE = k
				break
			}
		}
		for k := j + 1; k < len(act); k++ {
			if v.recs[act[k]].hash == eh {
				eInA = k
				break
			}
		}
		switch {
		case aInE < 0 && eInA < 0:
			f := base
			f.Kind = Altered
			f.Detail = fmt.Sprintf("its hash is %s; the checkpoint at seq %d lists %s for seq %d", short(ah), cpRec.seq, short(eh), c.Seqs[exp[i]])
			return at(f, act[j])
		case aInE >= 0 && eInA < 0:
			return deleted(i, aInE-i, j)
		case aInE < 0:
			f := base
			f.Kind, f.Count = Inserted, eInA-j
			f.Detail = fmt.Sprintf("the checkpoint at seq %d does not list it; the message it lists next, seq %d, comes after it as %s", cpRec.seq, c.Seqs[exp[i]], v.describe(act[eInA]))
			return at(f, act[j])
		default:
			f := base
			f.Kind = Reordered
			f.Detail = fmt.Sprintf("it comes before %s, which the checkpoint at seq %d lists first", v.describe(act[eInA]), cpRec.seq)
			return at(f, act[j])
		}
	}
	if i < len(exp) {
		return deleted(i, len(exp)-i, j)
	}
	if j < len(act) {
		f := base
		f.Kind, f.Count = Inserted, len(act)-j
		f.Detail = fmt.Sprintf("the checkpoint at seq %d lists no message after seq %d", cpRec.seq, c.LastSeq)
		return at(f, act[j])
	}
	return nil
}

// continuity checks that each checkpoint continues the chain of the ones
// before it; messages between two checkpoints' ranges (whose own
// checkpoint is gone) are folded into the chain and must lead to the next
// checkpoint's prev_chain.
func (v *Verifier) continuity(cps []vcp, window uint64, bySeq []int) []Finding {
	var out []Finding
	var fseq uint64
	var fchain Hash
	started := false
	for _, c := range cps {
		cpRec := v.recs[c.rec]
		if !started || c.FirstSeq <= window {
			fseq, fchain, started = c.LastSeq, c.Chain, true
			continue
		}
		switch {
		case c.LastSeq <= fseq:
			continue // inside what is already chained; its list was compared
		case c.FirstSeq-1 == fseq:
			if c.Prev != fchain {
				out = append(out, Finding{Kind: Unchained, Seq: cpRec.seq, Count: 1, EventID: cpRec.id, Type: cpRec.typ,
					Subject: cpRec.subject, Position: cpRec.position, CheckpointSeq: cpRec.seq, order: 2 * cpRec.position,
					Detail: fmt.Sprintf("its prev_chain %s is not the chain %s after seq %d", short(c.Prev), short(fchain), fseq)})
			}
		case c.FirstSeq-1 < fseq:
			if h, ok := c.ChainAt(fseq); ok && h != fchain {
				out = append(out, Finding{Kind: Unchained, Seq: cpRec.seq, Count: 1, EventID: cpRec.id, Type: cpRec.typ,
					Subject: cpRec.subject, Position: cpRec.position, CheckpointSeq: cpRec.seq, order: 2 * cpRec.position,
					Detail: fmt.Sprintf("it overlaps the checkpoints before it with another chain value after seq %d", fseq)})
			}
		default:
			gap := v.inRange(fseq+1, c.FirstSeq-1, bySeq)
			h := fchain
			for _, i := range gap {
				h = NextChain(h, v.recs[i].hash)
			}
			if h != c.Prev {
				f := Finding{Kind: Unchained, Seq: fseq + 1, Count: len(gap), CheckpointSeq: cpRec.seq,
					Detail: fmt.Sprintf("no checkpoint lists seq %d–%d (the one that did is gone), and the %d message(s) there do not chain to the checkpoint at seq %d: one of them was deleted, altered, inserted or moved",
						fseq+1, c.FirstSeq-1, len(gap), cpRec.seq)}
				if len(gap) > 0 {
					r := v.recs[gap[0]]
					f.Seq, f.EventID, f.Type, f.Subject, f.Position, f.order = r.seq, r.id, r.typ, r.subject, r.position, 2*r.position
				} else {
					f.Position, f.order = cpRec.position, 2*cpRec.position-1
				}
				out = append(out, f)
			}
		}
		fseq, fchain = c.LastSeq, c.Chain
	}
	return out
}

// describe names a record for people: "seq 17 (jit.granted grt_…/granted)".
func (v *Verifier) describe(i int) string {
	r := v.recs[i]
	switch {
	case r.id != "":
		return fmt.Sprintf("seq %d (%s %s)", r.seq, r.typ, r.id)
	default:
		return fmt.Sprintf("seq %d (on %s)", r.seq, r.subject)
	}
}

func short(h Hash) string { return hex.EncodeToString(h[:6]) }

func sorted(s []string) []string { slices.Sort(s); return s }

// decodeEvent decodes a stored message as a CloudEvent, in binary mode
// when it has a ce-specversion header, as broker.FromMsg does.
func decodeEvent(h map[string][]string, body []byte) (events.Event, error) {
	for k := range h {
		if strings.EqualFold(k, "ce-specversion") {
			return events.DecodeBinary(h, body)
		}
	}
	return events.Decode(body)
}

// peekIDType reads a message's event id and type for naming it in a
// finding, without validating it: from the ce-id and ce-type headers of a
// binary-mode event, or the body's "id" and "type", or else Nats-Msg-Id.
func peekIDType(h map[string][]string, body []byte) (string, string) {
	var e struct {
		ID   string `json:"id"`
		Type string `json:"type"`
	}
	for k, v := range h {
		switch {
		case len(v) == 0:
		case strings.EqualFold(k, "ce-id"):
			e.ID = v[0]
		case strings.EqualFold(k, "ce-type"):
			e.Type = v[0]
		}
	}
	if e.ID == "" && json.Unmarshal(body, &e) != nil || e.ID == "" {
		for k, v := range h {
			if strings.EqualFold(k, "Nats-Msg-Id") && len(v) > 0 {
				e.ID = v[0]
			}
		}
	}
	return truncate(e.ID, 128), truncate(e.Type, 64)
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "…"
}
