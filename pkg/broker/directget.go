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

// DirectGetRequest is a JetStream direct get batch request (the body of
// $JS.API.DIRECT.GET.<stream>): messages from Seq on (matching NextBySubj,
// up to Batch), or the last message of each subject in MultiLast (at most
// 1024 subjects' worth), as of UpToSeq.
type DirectGetRequest struct {
	Seq        uint64   `json:"seq,omitempty"`
	NextBySubj string   `json:"next_by_subj,omitempty"`
	Batch      int      `json:"batch,omitempty"`
	MaxBytes   int      `json:"max_bytes,omitempty"`
	MultiLast  []string `json:"multi_last,omitempty"`
	UpToSeq    uint64   `json:"up_to_seq,omitempty"`
}

// DirectPage is one direct get answer: the messages and what the server
// says remains.
type DirectPage struct {
	Msgs []StoredMsg
	// Pending is how many matching messages remain after the last one
	// returned; LastSeq is the sequence of the last one returned (the
	// stream's last at the time for an empty page).
	Pending, LastSeq uint64
}

// ErrDirectGet wraps a status the server answered a direct get with.
var ErrDirectGet = errors.New("direct get")

// DirectGet sends a batch request to the stream's direct get API under
// prefix ("$JS.API" inside the services' account, auth.JSPrefix for client
// principals) and collects the answer until its end-of-batch marker. No
// result is an empty page, not an error.
func DirectGet(ctx context.Context, nc *nats.Conn, prefix, stream string, req DirectGetRequest) (DirectPage, error) {
	body, err := json.Marshal(req)
	if err != nil {
		return DirectPage{}, err
	}
	inbox := nc.NewRespInbox()
	sub, err := nc.SubscribeSync(inbox)
	if err != nil {
		return DirectPage{}, err
	}
	defer sub.Unsubscribe()
	subject := prefix + ".DIRECT.GET." + stream
	if err := nc.PublishRequest(subject, inbox, body); err != nil {
		return DirectPage{}, err
	}
	var page DirectPage
	for {
		m, err := sub.NextMsgWithContext(ctx)
		if err != nil {
			if errors.Is(err, context.DeadlineExceeded) && len(page.Msgs) == 0 {
				return DirectPage{}, fmt.Errorf("%w %s: no answer: %w", ErrDirectGet, subject, err)
			}
			return DirectPage{}, fmt.Errorf("%w %s: %w", ErrDirectGet, subject, err)
		}
		if len(m.Data) == 0 && m.Header.Get("Status") != "" {
			status := m.Header.Get("Status")
			switch status {
			case "204": // end of batch
				page.Pending, _ = strconv.ParseUint(m.Header.Get("Nats-Num-Pending"), 10, 64)
				if ls, err := strconv.ParseUint(m.Header.Get("Nats-Last-Sequence"), 10, 64); err == nil && len(page.Msgs) == 0 {
					page.LastSeq = ls
				}
				return page, nil
			case "404":
				return page, nil
			case "503":
				return DirectPage{}, fmt.Errorf("%w %s: no responders (is the stream there?)", ErrDirectGet, subject)
			default:
				return DirectPage{}, fmt.Errorf("%w %s: %s %s", ErrDirectGet, subject, status, m.Header.Get("Description"))
			}
		}
		sm, err := storedMsg(m)
		if err != nil {
			return DirectPage{}, fmt.Errorf("%w %s: %w", ErrDirectGet, subject, err)
		}
		page.Msgs = append(page.Msgs, sm)
		page.LastSeq = sm.Seq
		// A single (non-batch) answer has no end-of-batch marker.
		if req.Batch == 0 && len(req.MultiLast) == 0 {
			return page, nil
		}
	}
}

// AwaitGrantKey waits until the grant key of agent's grant grantID has been
// written (or has already ended), reading it by direct get: jit.granted is
// published before the key (docs/architecture.md, "Announced before
// usable"), so a client that acts the instant it is told "granted" calls
// this first to find the grant honoured. It asks for the key's last message
// by subject ($JS.API.DIRECT.GET.<stream>.<subject>, the form an agent may
// use for its own keys) under the first of prefixes that answers (a client
// principal's auth.JSPrefix, then "$JS.API" for a server without
// accounts). It returns ctx's error if the key has not appeared.
func AwaitGrantKey(ctx context.Context, nc *nats.Conn, prefixes []string, agent, grantID string) error {
	key := ".DIRECT.GET.KV_" + BucketGrants + ".$KV." + BucketGrants + "." + GrantKey(agent, grantID)
	delay := time.Millisecond
	for {
		m, err := nc.RequestWithContext(ctx, prefixes[0]+key, nil)
		switch {
		case err == nil && m.Header.Get("Status") == "":
			return nil // written (a later deletion or marker also means it was)
		case errors.Is(err, nats.ErrNoResponders) && len(prefixes) > 1:
			prefixes = prefixes[1:]
			continue
		}
		select {
		case <-ctx.Done():
			if err != nil {
				return fmt.Errorf("await grant %s: %w (%v)", grantID, ctx.Err(), err)
			}
			return fmt.Errorf("await grant %s: %w", grantID, ctx.Err())
		case <-time.After(delay):
		}
		delay = min(2*delay, 50*time.Millisecond)
	}
}
