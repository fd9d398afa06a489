package broker

import (
	"context"
	"encoding/json"
	"fmt"
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
	req := struct {
		Seq     uint64 `json:"seq"`
		NextFor string `json:"next_by_subj"`
	}{Seq: max(from, 1), NextFor: subject}
	api := APIPrefixOf(js) + ".STREAM.MSG.GET." + AuditStream
	for {
		body, _ := json.Marshal(req)
		msg, err := js.Conn().RequestWithContext(ctx, api, body)
		if err != nil {
			return events.Event{}, 0, false, fmt.Errorf("find %s on %s: %w", id, subject, err)
		}
		var r msgGetResponse
		if err := json.Unmarshal(msg.Data, &r); err != nil {
			return events.Event{}, 0, false, fmt.Errorf("find %s on %s: %w", id, subject, err)
		}
		if r.Error != nil {
			if r.Error.ErrCode == int(jetstream.JSErrCodeMessageNotFound) || r.Error.Code == 404 {
				return events.Event{}, 0, false, nil
			}
			return events.Event{}, 0, false, fmt.Errorf("find %s on %s: %s (%d)", id, subject, r.Error.Description, r.Error.ErrCode)
		}
		if r.Message == nil {
			return events.Event{}, 0, false, fmt.Errorf("find %s on %s: empty answer", id, subject)
		}
		var hdr nats.Header
		if len(r.Message.Header) > 0 {
			if hdr, err = nats.DecodeHeadersMsg(r.Message.Header); err != nil {
				return events.Event{}, 0, false, fmt.Errorf("find %s on %s: headers at %d: %w", id, subject, r.Message.Sequence, err)
			}
		}
		if hdr.Get(jetstream.MsgIDHeader) == id {
			ev, err := FromMsg(hdr, r.Message.Data)
			if err != nil {
				return events.Event{}, 0, false, fmt.Errorf("find %s on %s: at %d: %w", id, subject, r.Message.Sequence, err)
			}
			return ev, r.Message.Sequence, true, nil
		}
		req.Seq = r.Message.Sequence + 1
	}
}
