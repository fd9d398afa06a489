package broker

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/nats-io/nats.go"
)

// StoredMsg is one message of a stream as the stream stores it: its
// sequence, subject, the broker's timestamp, the publisher's headers and
// body. The direct get response headers (Nats-Stream, Nats-Sequence, …) are
// removed from Header.
type StoredMsg struct {
	Seq     uint64
	Subject string
	Time    time.Time
	Header  nats.Header
	Data    []byte
}

// DirectRead says what ReadDirect reads.
type DirectRead struct {
	// Filter is a subject filter, wildcards allowed; empty means ">".
	Filter string
	// FromSeq is the first sequence to read (0 or 1: from the start).
	FromSeq uint64
	// Since, if set, starts at the first message the broker stored at or
	// after it (FromSeq is then ignored).
	Since time.Time
	// UpToSeq, if set, stops after this sequence. Zero reads up to the last
	// message matching Filter when the read started, so that a read of a
	// stream that keeps growing ends.
	UpToSeq uint64
	// Batch is how many messages one request asks for (default 256).
	Batch int
	// Wait bounds the wait for each message of a batch (default 5 s).
	Wait time.Duration
	// Prefix is the JetStream API prefix ("$JS.API" if empty; a client
	// principal's is auth.JSPrefix, see APIPrefixOf).
	Prefix string
}

// ErrBadDirectGet is returned when the server refuses a direct get request
// (a status other than 404 "no message" and 204 "end of batch").
var ErrBadDirectGet = errors.New("direct get refused")

// directGetHeaders are the headers a direct get adds to a stored message.
var directGetHeaders = []string{"Nats-Stream", "Nats-Subject", "Nats-Sequence", "Nats-Time-Stamp",
	"Nats-Num-Pending", "Nats-Last-Sequence", "Nats-UpTo-Sequence"}

// directGetRequest is the body of a $JS.API.DIRECT.GET request.
type directGetRequest struct {
	Seq       uint64     `json:"seq,omitempty"`
	LastFor   string     `json:"last_by_subj,omitempty"`
	NextFor   string     `json:"next_by_subj,omitempty"`
	Batch     int        `json:"batch,omitempty"`
	MaxBytes  int        `json:"max_bytes,omitempty"`
	StartTime *time.Time `json:"start_time,omitempty"`
}

// directMaxBytes bounds one batch's bytes: the client's subscription holds
// a whole batch.
const directMaxBytes = 8 << 20

// ReadDirect reads the messages of stream that r selects, in stream order,
// and calls fn for each. It creates no consumer: it uses JetStream's direct
// get ($JS.API.DIRECT.GET.<stream>, the stream must allow direct access)
// with batch requests, so a principal that may only read the stream can run
// it. It returns fn's first error, ctx's error, ErrBadDirectGet (wrapped)
// when the server refuses a request, or a timeout error when the server
// stops answering.
func ReadDirect(ctx context.Context, nc *nats.Conn, stream string, r DirectRead, fn func(StoredMsg) error) error {
	if r.Filter == "" {
		r.Filter = ">"
	}
	if r.Batch <= 0 {
		r.Batch = 256
	}
	if r.Wait <= 0 {
		r.Wait = 5 * time.Second
	}
	if r.Prefix == "" {
		r.Prefix = "$JS.API"
	}
	subject := r.Prefix + ".DIRECT.GET." + stream
	upTo := r.UpToSeq
	if upTo == 0 {
		last, ok, err := directGetOne(ctx, nc, subject, directGetRequest{LastFor: r.Filter}, r.Wait)
		if err != nil || !ok {
			return err
		}
		upTo = last.Seq
	}
	req := directGetRequest{NextFor: r.Filter, Batch: r.Batch, MaxBytes: directMaxBytes, Seq: max(r.FromSeq, 1)}
	if !r.Since.IsZero() {
		t := r.Since.UTC()
		req.Seq, req.StartTime = 0, &t
	}
	inbox := nc.NewRespInbox()
	sub, err := nc.SubscribeSync(inbox)
	if err != nil {
		return err
	}
	defer func() { _ = sub.Unsubscribe() }()
	// A batch may be up to directMaxBytes: let the subscription hold it.
	_ = sub.SetPendingLimits(-1, -1)
	for {
		body, _ := json.Marshal(req)
		if err := nc.PublishRequest(subject, inbox, body); err != nil {
			return err
		}
		var last uint64
		for {
			m, err := nextMsg(ctx, sub, r.Wait)
			if err != nil {
				return fmt.Errorf("direct get %s: %w", stream, err)
			}
			// A stored message always carries Nats-Sequence; a status
			// message (end of batch, not found) never does.
			if m.Header.Get("Nats-Sequence") == "" {
				switch status := m.Header.Get("Status"); status {
				case "204": // end of batch
				case "404": // nothing (more) to read
					return nil
				default:
					return fmt.Errorf("%w: %s %s %s", ErrBadDirectGet, stream, status, m.Header.Get("Description"))
				}
				break
			}
			sm, err := storedMsg(m)
			if err != nil {
				return fmt.Errorf("direct get %s: %w", stream, err)
			}
			if sm.Seq > upTo {
				return nil
			}
			last = sm.Seq
			if err := fn(sm); err != nil {
				return err
			}
			if sm.Seq == upTo {
				return nil
			}
		}
		if last == 0 {
			return nil // an empty batch: nothing more matches
		}
		req.Seq, req.StartTime = last+1, nil
	}
}

// DirectGetLast returns the last message on subject (wildcards allowed),
// with ok false when there is none.
func DirectGetLast(ctx context.Context, nc *nats.Conn, stream, subject string) (StoredMsg, bool, error) {
	return directGetOne(ctx, nc, "$JS.API.DIRECT.GET."+stream, directGetRequest{LastFor: subject}, 5*time.Second)
}

func directGetOne(ctx context.Context, nc *nats.Conn, subject string, req directGetRequest, wait time.Duration) (StoredMsg, bool, error) {
	body, _ := json.Marshal(req)
	ctx, cancel := context.WithTimeout(ctx, wait)
	defer cancel()
	m, err := nc.RequestWithContext(ctx, subject, body)
	if err != nil {
		return StoredMsg{}, false, fmt.Errorf("direct get %s: %w", subject, err)
	}
	if m.Header.Get("Nats-Sequence") == "" {
		if status := m.Header.Get("Status"); status == "404" {
			return StoredMsg{}, false, nil
		}
		return StoredMsg{}, false, fmt.Errorf("%w: %s %s %s", ErrBadDirectGet, subject, m.Header.Get("Status"), m.Header.Get("Description"))
	}
	sm, err := storedMsg(m)
	return sm, err == nil, err
}

func nextMsg(ctx context.Context, sub *nats.Subscription, wait time.Duration) (*nats.Msg, error) {
	ctx, cancel := context.WithTimeout(ctx, wait)
	defer cancel()
	return sub.NextMsgWithContext(ctx)
}

// storedMsg reads a direct get response into a StoredMsg.
func storedMsg(m *nats.Msg) (StoredMsg, error) {
	seq, err := strconv.ParseUint(m.Header.Get("Nats-Sequence"), 10, 64)
	if err != nil {
		return StoredMsg{}, fmt.Errorf("response without a valid Nats-Sequence: %w", err)
	}
	ts, err := time.Parse(time.RFC3339Nano, m.Header.Get("Nats-Time-Stamp"))
	if err != nil {
		return StoredMsg{}, fmt.Errorf("seq %d: bad Nats-Time-Stamp: %w", seq, err)
	}
	sm := StoredMsg{Seq: seq, Subject: m.Header.Get("Nats-Subject"), Time: ts, Data: m.Data}
	h := nats.Header{}
	for k, v := range m.Header {
		h[k] = v
	}
	for _, k := range directGetHeaders {
		delete(h, k)
	}
	sm.Header = h
	return sm, nil
}
