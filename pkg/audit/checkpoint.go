package audit

import (
	"crypto/ed25519"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/agentjit/jit/pkg/events"
)

// Errors of checkpoint handling.
var (
	// ErrBadCheckpoint is a checkpoint whose fields do not fit together.
	ErrBadCheckpoint = errors.New("malformed checkpoint")
	// ErrUnknownKey is a checkpoint signed by a key the verifier was not given.
	ErrUnknownKey = errors.New("checkpoint signed by an unknown key")
	// ErrBadSignature is a checkpoint whose signature does not verify.
	ErrBadSignature = errors.New("checkpoint signature does not verify")
)

// CheckpointEventID is the event id of the checkpoint of stream over
// first..last. It is derived from the range, so that a checkpoint published
// again (a retry, a restart, a replica with the same key) is stored once.
func CheckpointEventID(stream string, first, last uint64) string {
	return fmt.Sprintf("checkpoint/%s/%d-%d", stream, first, last)
}

// NewCheckpoint builds the unsigned checkpoint of the messages with
// sequences first..last of stream (less skipped), whose hashes are msgs in
// stream order, after the chain value prev. coveredUntil is the broker's
// timestamp of the message at last.
func NewCheckpoint(stream string, first, last uint64, skipped []events.SeqRange, prev Hash, msgs []Hash, coveredUntil time.Time) events.Checkpoint {
	raw := make([]byte, 0, len(msgs)*32)
	for _, m := range msgs {
		raw = append(raw, m[:]...)
	}
	return events.Checkpoint{
		Stream:       stream,
		FirstSeq:     first,
		LastSeq:      last,
		Count:        len(msgs),
		Skipped:      skipped,
		PrevChain:    hex.EncodeToString(prev[:]),
		Chain:        hexHash(Fold(prev, msgs)),
		Hashes:       base64.StdEncoding.EncodeToString(raw),
		CoveredUntil: coveredUntil.UTC(),
	}
}

func hexHash(h Hash) string { return hex.EncodeToString(h[:]) }

// KeyID names an Ed25519 public key: the hex of the first 8 bytes of its
// SHA-256.
func KeyID(pub ed25519.PublicKey) string {
	sum := sha256.Sum256(pub)
	return hex.EncodeToString(sum[:8])
}

// Sign sets c's key id and signature. Ed25519 is deterministic: the same
// checkpoint signed with the same key is the same event, byte for byte.
func Sign(c *events.Checkpoint, key ed25519.PrivateKey) {
	c.KeyID = KeyID(key.Public().(ed25519.PublicKey))
	c.Signature = base64.StdEncoding.EncodeToString(ed25519.Sign(key, SigningBytes(*c)))
}

// SigningBytes is what a checkpoint's signature covers: one "name=value"
// line per field, in this order, each ending in "\n":
//
//	jit-audit-checkpoint-v1
//	stream=JIT_AUDIT
//	first_seq=1
//	last_seq=1024
//	count=1024
//	skipped=             (ranges "first-last" joined by ",", or empty)
//	prev_chain=<hex>
//	chain=<hex>
//	hashes_sha256=<hex of SHA-256 of the decoded hashes>
//	covered_until=<RFC 3339 with nanoseconds, UTC>
//	key_id=<hex>
//
// A verifier in any language rebuilds these bytes from the event's data.
func SigningBytes(c events.Checkpoint) []byte {
	raw, _ := base64.StdEncoding.DecodeString(c.Hashes)
	sum := sha256.Sum256(raw)
	var sk []string
	for _, r := range c.Skipped {
		sk = append(sk, strconv.FormatUint(r.First, 10)+"-"+strconv.FormatUint(r.Last, 10))
	}
	var b strings.Builder
	b.WriteString("jit-audit-checkpoint-v1\n")
	fmt.Fprintf(&b, "stream=%s\nfirst_seq=%d\nlast_seq=%d\ncount=%d\nskipped=%s\n", c.Stream, c.FirstSeq, c.LastSeq, c.Count, strings.Join(sk, ","))
	fmt.Fprintf(&b, "prev_chain=%s\nchain=%s\nhashes_sha256=%s\n", c.PrevChain, c.Chain, hex.EncodeToString(sum[:]))
	fmt.Fprintf(&b, "covered_until=%s\nkey_id=%s\n", c.CoveredUntil.UTC().Format(time.RFC3339Nano), c.KeyID)
	return []byte(b.String())
}

// Checked is a checkpoint whose fields fit together, decoded.
type Checked struct {
	events.Checkpoint
	Prev, Chain Hash
	// Hashes are the message hashes, Seqs their stream sequences.
	Hashes []Hash
	Seqs   []uint64
}

// Check decodes c's hashes and checks that its fields fit together: a
// sequence range of at most MaxCheckpointEvents messages besides skipped
// ones, skipped ranges inside it in order, Count hashes, and Chain equal to
// PrevChain folded with the hashes. It does not check the signature (see
// Keys.Verify). Errors wrap ErrBadCheckpoint.
func Check(c events.Checkpoint) (Checked, error) {
	bad := func(format string, args ...any) (Checked, error) {
		return Checked{}, fmt.Errorf("%w: %s", ErrBadCheckpoint, fmt.Sprintf(format, args...))
	}
	if c.FirstSeq == 0 || c.LastSeq < c.FirstSeq {
		return bad("range %d-%d", c.FirstSeq, c.LastSeq)
	}
	if c.Count < 0 || c.Count > events.MaxCheckpointEvents {
		return bad("count %d outside 0-%d", c.Count, events.MaxCheckpointEvents)
	}
	if len(c.Skipped) > events.MaxCheckpointEvents {
		return bad("%d skipped ranges", len(c.Skipped))
	}
	next := c.FirstSeq
	seqs := make([]uint64, 0, c.Count)
	for _, r := range c.Skipped {
		if r.First < next || r.Last < r.First || r.Last > c.LastSeq {
			return bad("skipped range %d-%d out of order or outside %d-%d", r.First, r.Last, c.FirstSeq, c.LastSeq)
		}
		for s := next; s < r.First; s++ {
			if len(seqs) >= c.Count {
				return bad("more sequences than count %d", c.Count)
			}
			seqs = append(seqs, s)
		}
		if r.Last == c.LastSeq {
			next = 0 // nothing after the range
		} else {
			next = r.Last + 1
		}
	}
	if next != 0 {
		for s := next; ; s++ {
			if len(seqs) >= c.Count {
				return bad("more sequences than count %d", c.Count)
			}
			seqs = append(seqs, s)
			if s == c.LastSeq {
				break
			}
		}
	}
	if len(seqs) != c.Count {
		return bad("%d sequences in the range, count %d", len(seqs), c.Count)
	}
	raw, err := base64.StdEncoding.DecodeString(c.Hashes)
	if err != nil || len(raw) != 32*c.Count {
		return bad("hashes are not %d base64 SHA-256 values", c.Count)
	}
	out := Checked{Checkpoint: c, Seqs: seqs, Hashes: make([]Hash, c.Count)}
	for i := range out.Hashes {
		copy(out.Hashes[i][:], raw[32*i:])
	}
	if out.Prev, err = parseHash(c.PrevChain); err != nil {
		return bad("prev_chain: %v", err)
	}
	if out.Chain, err = parseHash(c.Chain); err != nil {
		return bad("chain: %v", err)
	}
	if Fold(out.Prev, out.Hashes) != out.Chain {
		return bad("chain is not prev_chain folded with the hashes")
	}
	return out, nil
}

func parseHash(s string) (Hash, error) {
	var h Hash
	b, err := hex.DecodeString(s)
	if err != nil || len(b) != 32 {
		return h, errors.New("not 64 hex digits")
	}
	copy(h[:], b)
	return h, nil
}

// ChainAt is the chain value after every message of the checkpoint with a
// sequence up to seq; ok is false when seq is outside first_seq-1..last_seq.
func (c Checked) ChainAt(seq uint64) (Hash, bool) {
	if seq+1 < c.FirstSeq || seq > c.LastSeq {
		return Hash{}, false
	}
	h := c.Prev
	for i, s := range c.Seqs {
		if s > seq {
			break
		}
		h = NextChain(h, c.Hashes[i])
	}
	return h, true
}
