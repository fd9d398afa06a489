package broker

import (
	"context"
	"encoding/json"
	"fmt"
	"sync"
	"time"

	"github.com/agentjit/jit/pkg/events"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// msgGetResponse is the answer to $JS.API.STREAM.MSG.GET.<stream>.
type msgGetResponse struct {
	Error *struct {
		Code        int    `json:"code"`
		ErrCode     int    `json:"err_code"`
		Description string `json:"description"`
	} `json:"error"`
	Message *struct {
		Subject  string    `json:"subject"`
		Sequence uint64    `json:"seq"`
		Header   []byte    `json:"hdrs"`
		Data     []byte    `json:"data"`
		Time     time.Time `json:"time"`
	} `json:"message"`
}

// FindEvent looks for the event with id on subject (no wildcards) of the
// audit stream, at or after stream sequence from. It asks the stream's
// leader (STREAM.MSG.GET, not a direct get, which a lagging replica may
// answer), one message at a time: it is for the rare question of a service
// that may have died between publishing an event and recording that it did,
// where the subject has few messages after from. found is false when no
// such event is stored.
func FindEvent(ctx context.Context, js jetstream.JetStream, subject string, from uint64, id string) (e events.Event, seq uint64, found bool, err error) {
	err = scanSubject(ctx, js, subject, max(from, 1), func(s uint64, hdr nats.Header, data []byte) (bool, error) {
		if hdr.Get(jetstream.MsgIDHeader) != id {
			return true, nil
		}
		ev, err := FromMsg(hdr, data)
		if err != nil {
			return false, fmt.Errorf("find %s on %s: at %d: %w", id, subject, s, err)
		}
		e, seq, found = ev, s, true
		return false, nil
	})
	return e, seq, found, err
}

// scanSubject gives each message of subject (no wildcards) at or after
// stream sequence from to fn, in order, asking the stream's leader one
// message at a time, until fn returns false or an error, or no message is
// left.
func scanSubject(ctx context.Context, js jetstream.JetStream, subject string, from uint64, fn func(seq uint64, hdr nats.Header, data []byte) (bool, error)) error {
	req := struct {
		Seq     uint64 `json:"seq"`
		NextFor string `json:"next_by_subj"`
	}{Seq: max(from, 1), NextFor: subject}
	for {
		m, found, err := msgGet(ctx, js, req)
		if err != nil || !found {
			return err
		}
		more, err := fn(m.Sequence, m.hdr, m.Data)
		if err != nil || !more {
			return err
		}
		req.Seq = m.Sequence + 1
	}
}

// leaderMsg is a message as STREAM.MSG.GET returns it, headers decoded.
type leaderMsg struct {
	Sequence uint64
	Data     []byte
	hdr      nats.Header
}

// msgGet asks the audit stream's leader for the message req names; found
// is false when there is none.
func msgGet(ctx context.Context, js jetstream.JetStream, req any) (leaderMsg, bool, error) {
	body, _ := json.Marshal(req)
	msg, err := js.Conn().RequestWithContext(ctx, APIPrefixOf(js)+".STREAM.MSG.GET."+AuditStream, body)
	if err != nil {
		return leaderMsg{}, false, fmt.Errorf("read %s: %w", AuditStream, err)
	}
	var r msgGetResponse
	if err := json.Unmarshal(msg.Data, &r); err != nil {
		return leaderMsg{}, false, fmt.Errorf("read %s: %w", AuditStream, err)
	}
	if r.Error != nil {
		if r.Error.ErrCode == int(jetstream.JSErrCodeMessageNotFound) || r.Error.Code == 404 {
			return leaderMsg{}, false, nil
		}
		return leaderMsg{}, false, fmt.Errorf("read %s: %s (%d)", AuditStream, r.Error.Description, r.Error.ErrCode)
	}
	if r.Message == nil {
		return leaderMsg{}, false, fmt.Errorf("read %s: empty answer", AuditStream)
	}
	m := leaderMsg{Sequence: r.Message.Sequence, Data: r.Message.Data}
	if len(r.Message.Header) > 0 {
		if m.hdr, err = nats.DecodeHeadersMsg(r.Message.Header); err != nil {
			return leaderMsg{}, false, fmt.Errorf("read %s: headers at %d: %w", AuditStream, m.Sequence, err)
		}
	}
	return m, true, nil
}

// eventAt reads the event stored at seq of the audit stream.
func eventAt(ctx context.Context, js jetstream.JetStream, seq uint64) (events.Event, error) {
	m, found, err := msgGet(ctx, js, struct {
		Seq uint64 `json:"seq"`
	}{seq})
	if err != nil {
		return events.Event{}, err
	}
	if !found {
		return events.Event{}, fmt.Errorf("read %s: no message at %d", AuditStream, seq)
	}
	return FromMsg(m.hdr, m.Data)
}

// EventFinder is FindEvent with a memory: what it has read of a subject it
// does not ask the stream again, so that a backlog of redeliveries about
// one agent (each asking whether its grant was announced) reads that
// agent's events once, not once per message. A stored range of the stream
// never changes, so what was read stays true. The zero value is ready;
// safe for concurrent use.
type EventFinder struct {
	mu       sync.Mutex
	subjects map[string]*subjectScan
}

// subjectScan is what was read of one subject: every event id stored at
// sequences [from, next), with its sequence.
type subjectScan struct {
	from, next uint64
	ids        map[string]uint64
}

// finderMaxIDs bounds what an EventFinder keeps: past it, it forgets all
// and starts again.
const finderMaxIDs = 100_000

// Find is FindEvent, answered from what was read before where it can be.
func (f *EventFinder) Find(ctx context.Context, js jetstream.JetStream, subject string, from uint64, id string) (events.Event, uint64, bool, error) {
	from = max(from, 1)
	f.mu.Lock()
	sc := f.subjects[subject]
	if sc == nil || from < sc.from || from > sc.next {
		// Not contiguous with what is known: start this subject afresh.
		sc = &subjectScan{from: from, next: from, ids: map[string]uint64{}}
	}
	seq, known := sc.ids[id]
	start := sc.next
	f.mu.Unlock()
	if known && seq >= from {
		e, err := eventAt(ctx, js, seq)
		return e, seq, err == nil, err
	}
	// Read the rest of the subject, remembering every id on the way.
	var (
		found    events.Event
		foundSeq uint64
		ok       bool
		read     = map[string]uint64{}
		next     = start
	)
	err := scanSubject(ctx, js, subject, start, func(seq uint64, hdr nats.Header, data []byte) (bool, error) {
		next = seq + 1
		mid := hdr.Get(jetstream.MsgIDHeader)
		read[mid] = seq
		if mid != id {
			return true, nil
		}
		e, err := FromMsg(hdr, data)
		if err != nil {
			return false, fmt.Errorf("find %s on %s: at %d: %w", id, subject, seq, err)
		}
		found, foundSeq, ok = e, seq, true
		return false, nil
	})
	if err != nil {
		return events.Event{}, 0, false, err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.subjects == nil || len(f.subjects) > finderMaxIDs/16 {
		f.subjects = map[string]*subjectScan{}
	}
	if cur := f.subjects[subject]; cur != nil && cur != sc && cur.next > next {
		return found, foundSeq, ok, nil // another caller read further
	}
	if len(sc.ids)+len(read) > finderMaxIDs {
		sc = &subjectScan{from: start, next: start, ids: map[string]uint64{}}
	}
	for k, v := range read {
		sc.ids[k] = v
	}
	sc.next = max(sc.next, next)
	f.subjects[subject] = sc
	return found, foundSeq, ok, nil
}
