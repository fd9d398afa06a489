// Package audit makes the audit stream tamper-evident: a hash of every
// stored message, a hash chain over them in stream order, Ed25519-signed
// checkpoints of that chain, the export format of an archived copy, and the
// verifier that names the first message deleted, altered, inserted or
// reordered. It never imports a NATS package: the auditor service and jitctl
// feed it stream messages.
package audit

import (
	"crypto/sha256"
	"encoding/binary"
	"hash"
	"slices"
)

// Hash is a SHA-256 value: a message's hash or a chain value.
type Hash = [32]byte

// Domain separators, so that a message hash can never be read as a chain
// value or the other way round.
const (
	leafDomain  = "jit-audit-leaf-v1\x00"
	chainDomain = "jit-audit-chain-v1\x00"
)

// transportHeaders are headers a reader of the stream may see that the
// publisher did not set (JetStream's direct get adds them to its answers).
// They are left out of a message's hash on every side, so that the auditor
// (reading with a consumer) and a verifier (reading with direct get) hash
// the same bytes.
var transportHeaders = []string{"Nats-Stream", "Nats-Subject", "Nats-Sequence", "Nats-Time-Stamp",
	"Nats-Num-Pending", "Nats-Last-Sequence", "Nats-UpTo-Sequence", "Status", "Description"}

// MessageHash is the hash of one stored message: SHA-256 over a domain
// separator, the subject, every header (keys sorted as bytes, each value in
// order, except transportHeaders) and the body, each length-prefixed with a
// 4-byte big-endian length:
//
//	SHA-256("jit-audit-leaf-v1\x00" || str(subject) || u32(n) ||
//	        n × (str(key) || str(value)) || str(body))
//
// where str(x) = u32(len(x)) || x and n counts the (key, value) pairs.
// The stream sequence and the broker's timestamp are not hashed: a faithful
// copy re-published into another stream keeps its hashes.
func MessageHash(subject string, header map[string][]string, body []byte) Hash {
	h := sha256.New()
	h.Write([]byte(leafDomain))
	writeStr(h, []byte(subject))
	keys := make([]string, 0, len(header))
	pairs := 0
	for k, v := range header {
		if slices.Contains(transportHeaders, k) {
			continue
		}
		keys = append(keys, k)
		pairs += len(v)
	}
	slices.Sort(keys)
	writeU32(h, uint32(pairs))
	for _, k := range keys {
		for _, v := range header[k] {
			writeStr(h, []byte(k))
			writeStr(h, []byte(v))
		}
	}
	writeStr(h, body)
	var out Hash
	h.Sum(out[:0])
	return out
}

// NextChain extends the chain: SHA-256("jit-audit-chain-v1\x00" || prev ||
// message hash). The chain before the first message of a stream is the zero
// Hash.
func NextChain(prev, msg Hash) Hash {
	var buf [len(chainDomain) + 64]byte
	n := copy(buf[:], chainDomain)
	n += copy(buf[n:], prev[:])
	copy(buf[n:], msg[:])
	return sha256.Sum256(buf[:])
}

// Fold extends prev with every hash of msgs in order.
func Fold(prev Hash, msgs []Hash) Hash {
	for _, m := range msgs {
		prev = NextChain(prev, m)
	}
	return prev
}

func writeU32(h hash.Hash, n uint32) {
	var b [4]byte
	binary.BigEndian.PutUint32(b[:], n)
	h.Write(b[:])
}

func writeStr(h hash.Hash, b []byte) {
	writeU32(h, uint32(len(b)))
	h.Write(b)
}
