package broker

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// JetStream's snapshot and restore API, the one `nats stream backup` and
// `nats stream restore` use, which nats.go's jetstream package does not
// offer. A snapshot is a stream's files as the server stores them: every
// message at its sequence with its headers (a KV key's TTL included), the
// deleted sequences, and the consumers with their delivered and acked
// positions.
const (
	apiSnapshot = "$JS.API.STREAM.SNAPSHOT."
	apiRestore  = "$JS.API.STREAM.RESTORE."
	// snapshotChunk is the size of the chunks asked for and sent: the
	// server's default, below every server's max payload.
	snapshotChunk = 128 << 10
	// answerTimeout bounds the wait for one answer of the server: an API
	// request's, a chunk of a snapshot, a chunk's acknowledgement (the
	// server itself gives up on a receiver silent for 5 s, and on a
	// restore whose next chunk does not come within 5 s).
	answerTimeout = 10 * time.Second
	// errCodeRestoreNameInUse is JetStream's "stream name already in use,
	// cannot restore".
	errCodeRestoreNameInUse = 10130
)

// ErrStreamExists is returned (wrapped) by RestoreStream when the stream
// exists where it is to be restored: JetStream never restores over a
// stream.
var ErrStreamExists = errors.New("the stream exists already")

// Snapshot is what SnapshotStream reports of a stream it wrote out: its
// configuration and state as the server gave them, verbatim, for
// RestoreStream (decoding them into the client library's types could drop
// a field the library does not know).
type Snapshot struct {
	Stream string
	Config json.RawMessage
	State  json.RawMessage
	StreamTally
}

// StreamTally is the part of a stream's state that says what it holds.
type StreamTally struct {
	Messages  uint64 `json:"messages"`
	Bytes     uint64 `json:"bytes"`
	FirstSeq  uint64 `json:"first_seq"`
	LastSeq   uint64 `json:"last_seq"`
	Consumers int    `json:"consumer_count"`
}

// apiReply is the envelope of a JetStream API answer.
type apiReply struct {
	Error *jetstream.APIError `json:"error,omitempty"`
}

func (r apiReply) err(what string) error {
	if r.Error == nil {
		return nil
	}
	if r.Error.ErrorCode == errCodeRestoreNameInUse {
		return fmt.Errorf("%s: %w", what, mapped{kind: ErrStreamExists, err: r.Error})
	}
	return fmt.Errorf("%s: %w", what, r.Error)
}

// SnapshotStream writes a snapshot of stream to w through nc, with the
// stream's consumers and their state, after the server checked every
// message's checksum. The server sends the snapshot in chunks, each
// acknowledged here as it arrives (its flow control). It returns the
// stream's configuration and state as of the snapshot, or an error if the
// server refused or ended the snapshot early, or ctx ended: what was
// written to w is then incomplete.
func SnapshotStream(ctx context.Context, nc *nats.Conn, stream string, w io.Writer) (Snapshot, error) {
	inbox := nc.NewInbox()
	sub, err := nc.SubscribeSync(inbox)
	if err != nil {
		return Snapshot{}, fmt.Errorf("snapshot %s: %w", stream, err)
	}
	defer func() { _ = sub.Unsubscribe() }()
	// The window of chunks in flight is the server's to bound (8 MiB).
	if err := sub.SetPendingLimits(-1, -1); err != nil {
		return Snapshot{}, fmt.Errorf("snapshot %s: %w", stream, err)
	}
	req, _ := json.Marshal(struct {
		DeliverSubject string `json:"deliver_subject"`
		ChunkSize      int    `json:"chunk_size"`
		CheckMsgs      bool   `json:"jsck"`
	}{inbox, snapshotChunk, true})
	m, err := request(ctx, nc, apiSnapshot+stream, req)
	if err != nil {
		return Snapshot{}, fmt.Errorf("snapshot %s: %w", stream, err)
	}
	var resp struct {
		apiReply
		Config json.RawMessage `json:"config"`
		State  json.RawMessage `json:"state"`
	}
	if err := json.Unmarshal(m.Data, &resp); err != nil {
		return Snapshot{}, fmt.Errorf("snapshot %s: answer %q: %w", stream, m.Data, err)
	}
	if err := resp.err("snapshot " + stream); err != nil {
		return Snapshot{}, err
	}
	snap := Snapshot{Stream: stream, Config: resp.Config, State: resp.State}
	if err := json.Unmarshal(resp.State, &snap.StreamTally); err != nil {
		return Snapshot{}, fmt.Errorf("snapshot %s: state %s: %w", stream, resp.State, err)
	}
	for {
		cctx, cancel := context.WithTimeout(ctx, answerTimeout)
		c, err := sub.NextMsgWithContext(cctx)
		cancel()
		if err != nil {
			return Snapshot{}, fmt.Errorf("snapshot %s: waiting for a chunk: %w", stream, err)
		}
		if len(c.Data) == 0 {
			// The end: a status of 204 when every chunk went out,
			// anything else says why the server stopped.
			if st := c.Header.Get("Status"); st != "" && st != "204" {
				return Snapshot{}, fmt.Errorf("snapshot %s: the server ended it: %s %s", stream, st, c.Header.Get("Description"))
			}
			return snap, nil
		}
		// Acknowledge first: the chunk is in memory, and the server stops
		// a snapshot whose acknowledgements lag.
		if c.Reply != "" {
			if err := c.Respond(nil); err != nil {
				return Snapshot{}, fmt.Errorf("snapshot %s: %w", stream, err)
			}
		}
		if _, err := w.Write(c.Data); err != nil {
			return Snapshot{}, fmt.Errorf("snapshot %s: %w", stream, err)
		}
	}
}

// RestoreStream creates the stream of snap through nc, with the
// configuration and state SnapshotStream reported, from the snapshot read
// from r: every message at its sequence, and the consumers with their
// positions. On a cluster the stream is placed as its configuration says
// (its replicas) and its consumers are assigned after the stream (they
// appear shortly after RestoreStream returns). It returns the restored
// stream's state. A stream of that name that exists already is never
// touched: the error then wraps ErrStreamExists. On any other error the
// server removes what it restored, unless the connection was lost before
// it answered.
func RestoreStream(ctx context.Context, nc *nats.Conn, snap Snapshot, r io.Reader) (StreamTally, error) {
	what := "restore " + snap.Stream
	req, err := json.Marshal(struct {
		Config json.RawMessage `json:"config"`
		State  json.RawMessage `json:"state"`
	}{snap.Config, snap.State})
	if err != nil {
		return StreamTally{}, fmt.Errorf("%s: %w", what, err)
	}
	m, err := request(ctx, nc, apiRestore+snap.Stream, req)
	if err != nil {
		return StreamTally{}, fmt.Errorf("%s: %w", what, err)
	}
	var resp struct {
		apiReply
		DeliverSubject string `json:"deliver_subject"`
	}
	if err := json.Unmarshal(m.Data, &resp); err != nil {
		return StreamTally{}, fmt.Errorf("%s: answer %q: %w", what, m.Data, err)
	}
	if err := resp.err(what); err != nil {
		return StreamTally{}, err
	}
	if resp.DeliverSubject == "" {
		return StreamTally{}, fmt.Errorf("%s: answer %q names nowhere to send the snapshot", what, m.Data)
	}
	buf := make([]byte, min(snapshotChunk, int(nc.MaxPayload())))
	for {
		n, rerr := io.ReadFull(r, buf)
		if n > 0 {
			if err := sendChunk(ctx, nc, resp.DeliverSubject, buf[:n], what); err != nil {
				return StreamTally{}, err
			}
		}
		if errors.Is(rerr, io.EOF) || errors.Is(rerr, io.ErrUnexpectedEOF) {
			break
		}
		if rerr != nil {
			return StreamTally{}, fmt.Errorf("%s: read the snapshot: %w", what, rerr)
		}
	}
	// An empty chunk ends the upload; the answer comes once the server has
	// rebuilt the stream, which takes as long as the stream is large.
	m, err = nc.RequestWithContext(ctx, resp.DeliverSubject, nil)
	if err != nil {
		return StreamTally{}, fmt.Errorf("%s: waiting for the server to finish: %w", what, err)
	}
	var done struct {
		apiReply
		State *StreamTally `json:"state"`
	}
	if err := json.Unmarshal(m.Data, &done); err != nil {
		return StreamTally{}, fmt.Errorf("%s: answer %q: %w", what, m.Data, err)
	}
	if err := done.err(what); err != nil {
		return StreamTally{}, err
	}
	if done.State == nil {
		return StreamTally{}, fmt.Errorf("%s: answer %q has no state", what, m.Data)
	}
	return *done.State, nil
}

// request makes one API request, answered within answerTimeout: a cluster
// that has no meta leader, or a request lost with a connection, never
// answers.
func request(ctx context.Context, nc *nats.Conn, subject string, body []byte) (*nats.Msg, error) {
	ctx, cancel := context.WithTimeout(ctx, answerTimeout)
	defer cancel()
	return nc.RequestWithContext(ctx, subject, body)
}

// sendChunk sends one chunk of a restore and waits for the server to take
// it: an empty answer, or an error. The server's subscription may not have
// reached every route yet when the first chunk goes out: a chunk nobody
// listens for is sent again, for a few seconds.
func sendChunk(ctx context.Context, nc *nats.Conn, subject string, chunk []byte, what string) error {
	deadline := time.Now().Add(answerTimeout)
	for {
		cctx, cancel := context.WithTimeout(ctx, answerTimeout)
		m, err := nc.RequestWithContext(cctx, subject, chunk)
		cancel()
		if errors.Is(err, nats.ErrNoResponders) && time.Now().Before(deadline) {
			select {
			case <-ctx.Done():
				return fmt.Errorf("%s: %w", what, ctx.Err())
			case <-time.After(50 * time.Millisecond):
			}
			continue
		}
		if err != nil {
			return fmt.Errorf("%s: send a chunk: %w", what, err)
		}
		if len(m.Data) == 0 {
			return nil
		}
		var r apiReply
		if err := json.Unmarshal(m.Data, &r); err != nil || r.Error == nil {
			return fmt.Errorf("%s: unexpected answer to a chunk: %q", what, m.Data)
		}
		return r.err(what)
	}
}
